// A js-libp2p browser peer for meshtalk's interop test
// (tests/tests/interop_js.rs): it reaches the relay over WebSocket,
// reserves a slot, listens on /webrtc (@libp2p/webrtc, private-to-private),
// optionally announces itself on the room's peers topic with
// @libp2p/pubsub-peer-discovery, and chats in the room with messages built
// from meshtalk.proto by hand. The test drives it through `window.__*`.
//
// URL parameters: relay (the relay's WebSocket multiaddr), room,
// announce (1: publish our record on meshtalk/peers/<room>), topic (the
// discovery topic instead of meshtalk/peers/<room>: universal-connectivity's
// browser peer discovery topic, say).

import { noise } from '@chainsafe/libp2p-noise'
import { yamux } from '@chainsafe/libp2p-yamux'
import { circuitRelayTransport } from '@libp2p/circuit-relay-v2'
import { gossipsub } from '@libp2p/gossipsub'
import { identify } from '@libp2p/identify'
import { ping } from '@libp2p/ping'
import { pubsubPeerDiscovery } from '@libp2p/pubsub-peer-discovery'
import { webRTC } from '@libp2p/webrtc'
import { webSockets } from '@libp2p/websockets'
import { multiaddr } from '@multiformats/multiaddr'
import { createLibp2p } from 'libp2p'

const params = new URLSearchParams(location.search)
const room = params.get('room')
const roomTopic = `meshtalk/room/${room}`
window.__log = []
window.__messages = []
const log = (...parts) => window.__log.push(parts.join(' '))

const node = await createLibp2p({
  addresses: { listen: ['/p2p-circuit', '/webrtc'] },
  transports: [
    webSockets(),
    // Loopback only: no STUN servers.
    webRTC({ rtcConfiguration: { iceServers: [] } }),
    circuitRelayTransport()
  ],
  connectionEncrypters: [noise()],
  streamMuxers: [yamux()],
  // The browser default refuses ws:// and private addresses.
  connectionGater: { denyDialMultiaddr: () => false },
  peerDiscovery: [
    pubsubPeerDiscovery({
      interval: 2000,
      topics: [params.get('topic') ?? `meshtalk/peers/${room}`],
      listenOnly: params.get('announce') !== '1'
    })
  ],
  services: {
    identify: identify(),
    ping: ping(),
    pubsub: gossipsub({ emitSelf: false, allowPublishToZeroTopicPeers: true })
  }
})

node.addEventListener('connection:open', e => log('open', e.detail.remoteAddr.toString()))
node.addEventListener('connection:close', e => log('close', e.detail.remoteAddr.toString()))
node.services.pubsub.subscribe(roomTopic)
node.services.pubsub.addEventListener('message', e => {
  const m = e.detail
  if (m.topic !== roomTopic) return
  // Room messages are meshtalk.proto `Request`s; the text is in them as
  // UTF-8, which is all the test looks for.
  window.__messages.push({
    from: m.type === 'signed' ? m.from.toString() : '',
    text: new TextDecoder('utf-8', { fatal: false }).decode(m.data)
  })
})

/** Dials `addr` and pings the peer over the new connection. */
window.__dial = async addr => {
  try {
    const conn = await node.dial(multiaddr(addr), { signal: AbortSignal.timeout(20000) })
    const rtt = await node.services.ping.ping(conn.remotePeer)
    return `ok ${conn.remoteAddr.toString()} rtt ${rtt}`
  } catch (e) {
    return `error ${e.message}`
  }
}

/** Publishes `text` as a meshtalk `Request { SEND_MESSAGE, SendMessage }`. */
window.__publish = async text => {
  const id = crypto.getRandomValues(new Uint8Array(16))
  const inner = [
    ...field(1, new TextEncoder().encode(text)),
    0x10, ...varint(Date.now()),
    ...field(3, id)
  ]
  const request = new Uint8Array([0x08, 0x00, ...field(2, inner)])
  try {
    await node.services.pubsub.publish(roomTopic, request)
    return 'ok'
  } catch (e) {
    return `error ${e.message}`
  }
}

/** A length-delimited protobuf field. */
function field (number, bytes) {
  return [(number << 3) | 2, ...varint(bytes.length), ...bytes]
}

/** A protobuf varint of a non-negative integer below 2^53. */
function varint (n) {
  const out = []
  while (n >= 0x80) {
    out.push((n % 0x80) | 0x80)
    n = Math.floor(n / 0x80)
  }
  out.push(n)
  return out
}

await node.dial(multiaddr(params.get('relay')))
window.__id = node.peerId.toString()
window.__ready = true
