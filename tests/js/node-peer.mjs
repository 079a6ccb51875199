// A js-libp2p peer in Node.js for meshtalk's interop tests
// (tests/tests/interop_node.rs). It speaks what PROTOCOL.md asks of another
// implementation and nothing of meshtalk's code: TCP, WebSocket and
// WebRTC-direct with Noise and Yamux, gossipsub (or floodsub) with strict
// signing, and room messages encoded and decoded by protobufjs from
// crates/protocol/proto/meshtalk.proto.
//
//   node node-peer.mjs --room R --nick N [--dial ADDR]... [--listen ADDR]...
//                      [--pubsub gossipsub|floodsub]
//
// and, to play a peer configured unlike meshtalk (the robustness tests):
//   --sign off          publish unsigned messages (StrictNoSign)
//   --msg-id content    gossipsub message ids from the content (SHA-256 of
//                       the data) instead of source and sequence number
//   --meshsub P[,P]     speak only these pubsub protocols (/meshsub/1.0.0)
//
// stdout, one JSON object a line:
//   {"type":"ready","peer":ID,"addrs":[...]}      once listening
//   {"type":"connected","peer":ID,"addr":A}        a connection opened
//   {"type":"message","from":ID,"nick":N,"text":T} a room line (nick may be null)
//   {"type":"nick","from":ID,"nick":N}             an UPDATE_PEER
//   {"type":"rejected","from":ID,"error":E}        a room message that did not decode
//   {"type":"protocols","peer":ID,"protocols":[...]} the answer to /protocols
//   {"type":"error","error":E}                     a command failed
// stdin, one line a command: `/nick NAME`, `/dial ADDR`, `/protocols PEER`
// (what identify learnt PEER speaks), or text to say.

import { emit, fail, parseArgs } from './node-common.mjs'
import { createInterface } from 'node:readline'
import { fileURLToPath } from 'node:url'
import { noise } from '@chainsafe/libp2p-noise'
import { yamux } from '@chainsafe/libp2p-yamux'
import { floodsub } from '@libp2p/floodsub'
import { gossipsub } from '@libp2p/gossipsub'
import { identify } from '@libp2p/identify'
import { ping } from '@libp2p/ping'
import { tcp } from '@libp2p/tcp'
import { webRTCDirect } from '@libp2p/webrtc'
import { webSockets } from '@libp2p/websockets'
import { multiaddr } from '@multiformats/multiaddr'
import { createLibp2p } from 'libp2p'
import protobuf from 'protobufjs'

const args = parseArgs('node-peer', {
  dial: [],
  listen: [],
  room: 'lobby',
  nick: '',
  pubsub: 'gossipsub',
  sign: 'on',
  'msg-id': 'default',
  meshsub: ''
})

const proto = await protobuf.load(
  fileURLToPath(new URL('../../crates/protocol/proto/meshtalk.proto', import.meta.url))
)
const Request = proto.lookupType('meshtalk.Request')
const Type = proto.lookupEnum('meshtalk.Request.Type').values
const topic = `meshtalk/room/${args.room}`

const globalSignaturePolicy = args.sign === 'off' ? 'StrictNoSign' : 'StrictSign'
const gossipOptions = { emitSelf: false, allowPublishToZeroTopicPeers: true, globalSignaturePolicy }
if (args['msg-id'] === 'content') {
  gossipOptions.msgIdFn = async m => new Uint8Array(await crypto.subtle.digest('SHA-256', m.data))
}
const pubsub = args.pubsub === 'floodsub'
  ? floodsub({ globalSignaturePolicy })
  : gossipsub(gossipOptions)

const node = await createLibp2p({
  addresses: { listen: args.listen },
  transports: [tcp(), webSockets(), webRTCDirect({ rtcConfiguration: { iceServers: [] } })],
  connectionEncrypters: [noise()],
  streamMuxers: [yamux()],
  // Tests live on loopback, which js-libp2p would otherwise not dial.
  connectionGater: { denyDialMultiaddr: () => false },
  services: { identify: identify(), ping: ping(), pubsub },
  start: false
})
if (args.meshsub !== '') node.services.pubsub.protocols = args.meshsub.split(',')
await node.start()

const nicks = new Map()
const members = new Set()
let lastAnnounce = 0
let announceLater = null

/** Publishes `request` (a plain object of meshtalk.Request) in the room. */
async function publish (request) {
  const bytes = Request.encode(Request.fromObject(request)).finish()
  await node.services.pubsub.publish(topic, bytes)
}

/** UPDATE_PEER with our nickname: on joining, and when a member appears. */
async function announce () {
  lastAnnounce = Date.now()
  const handle = new TextEncoder().encode(args.nick)
  await publish({ type: Type.UPDATE_PEER, updatePeer: { userHandle: handle } })
}

node.addEventListener('connection:open', e => {
  emit({ type: 'connected', peer: e.detail.remotePeer.toString(), addr: e.detail.remoteAddr.toString() })
})

/** Announces again for a newcomer: at most once per 2 s, as PROTOCOL.md asks. */
function announceSoon () {
  if (announceLater !== null) return
  const wait = Math.max(0, lastAnnounce + 2000 - Date.now())
  announceLater = setTimeout(() => {
    announceLater = null
    announce().catch(fail)
  }, wait)
}

node.services.pubsub.addEventListener('subscription-change', announceSoon)

node.services.pubsub.addEventListener('message', e => {
  const m = e.detail
  if (m.topic !== topic) return
  const from = m.type === 'signed' ? m.from.toString() : null
  if (from !== null && !members.has(from)) {
    members.add(from)
    announceSoon()
  }
  let request
  try {
    request = Request.toObject(Request.decode(m.data), { enums: String })
  } catch (err) {
    emit({ type: 'rejected', from, error: err.message })
    return
  }
  const text = bytes => new TextDecoder().decode(bytes)
  if (request.type === 'UPDATE_PEER') {
    const nick = text(request.updatePeer?.userHandle ?? new Uint8Array())
    nicks.set(from, nick)
    emit({ type: 'nick', from, nick })
  } else if (request.type === 'SEND_MESSAGE') {
    emit({ type: 'message', from, nick: nicks.get(from) ?? null, text: text(request.sendMessage.data) })
  }
})

node.services.pubsub.subscribe(topic)
for (const addr of args.dial) {
  await node.dial(multiaddr(addr), { signal: AbortSignal.timeout(30000) })
}
emit({
  type: 'ready',
  peer: node.peerId.toString(),
  addrs: node.getMultiaddrs().map(a => a.toString())
})
announce().catch(fail)

const lines = createInterface({ input: process.stdin })
lines.on('line', line => {
  if (line.startsWith('/nick ')) {
    args.nick = line.slice(6)
    announce().catch(fail)
  } else if (line.startsWith('/protocols ')) {
    // What identify learnt the peer speaks.
    const peer = node.getConnections().map(c => c.remotePeer).find(p => p.toString() === line.slice(11))
    if (peer === undefined) return fail(new Error(`not connected to ${line.slice(11)}`))
    node.peerStore.get(peer)
      .then(p => emit({ type: 'protocols', peer: peer.toString(), protocols: p.protocols }))
      .catch(fail)
  } else if (line.startsWith('/dial ')) {
    node.dial(multiaddr(line.slice(6)), { signal: AbortSignal.timeout(30000) }).catch(fail)
  } else if (line !== '') {
    publish({
      type: Type.SEND_MESSAGE,
      sendMessage: {
        data: new TextEncoder().encode(line),
        created: Date.now(),
        id: crypto.getRandomValues(new Uint8Array(16))
      }
    }).catch(fail)
  }
})
lines.on('close', async () => {
  await node.stop()
  process.exit(0)
})
