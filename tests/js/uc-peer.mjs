// A js-libp2p peer in Node.js configured as universal-connectivity's js peer
// is (github.com/libp2p/universal-connectivity, js-peer/src/lib): chat as
// raw UTF-8 on the topic `universal-connectivity`, gossipsub message ids
// that are the SHA-256 of the decimal sequence number, and direct messages
// on `/universal-connectivity/dm/1.0.0` (one varint-length-prefixed request
// and response, from crates/protocol/proto/uc_direct_message.proto, by
// protobufjs), and files as its peer exchanges them: an id (a UUID) announced
// on `universal-connectivity-file`, fetched at once from the announcer on
// `/universal-connectivity-file/1` (the id, length-prefixed, answered by the
// whole file, length-prefixed, at most 4 MiB). It knows nothing of
// meshtalk's protocols. For tests/tests/interop.rs (`meshtalk chat
// --compat uc`).
//
//   node uc-peer.mjs [--dial ADDR]... [--listen ADDR]...
//
// `--listen /p2p-circuit` holds a reservation on the relay it dials, as its
// browser peers do, so pages reach it through the relay ("ready" waits for
// it).
//
// stdout, one JSON object a line:
//   {"type":"ready","peer":ID,"addrs":[...]}
//   {"type":"message","from":ID,"nick":null,"text":T}  a chat line
//   {"type":"dm","from":ID,"text":T}                   a direct message (answered 200)
//   {"type":"dm_sent","to":ID}                         ours was answered 200
//   {"type":"file","from":ID,"id":I,"size":N,"sha256":H}  a file announced and fetched
//   {"type":"file_sent","id":I,"sha256":H}              ours was announced
//   {"type":"error","error":E}
// stdin: `/dm PEER TEXT` sends a direct message, `/file PATH` announces a
// file; any other line is said.

import { emit, fail, parseArgs } from './node-common.mjs'
import { createHash, randomUUID } from 'node:crypto'
import { readFile } from 'node:fs/promises'
import { createInterface } from 'node:readline'
import { fileURLToPath } from 'node:url'
import { noise } from '@chainsafe/libp2p-noise'
import { yamux } from '@chainsafe/libp2p-yamux'
import { circuitRelayTransport } from '@libp2p/circuit-relay-v2'
import { gossipsub } from '@libp2p/gossipsub'
import { identify } from '@libp2p/identify'
import { peerIdFromString } from '@libp2p/peer-id'
import { tcp } from '@libp2p/tcp'
import { lpStream, pbStream } from '@libp2p/utils'
import { webSockets } from '@libp2p/websockets'
import { multiaddr } from '@multiformats/multiaddr'
import { createLibp2p } from 'libp2p'
import protobuf from 'protobufjs'

const CHAT_TOPIC = 'universal-connectivity'
const CHAT_FILE_TOPIC = 'universal-connectivity-file'
const DM_PROTOCOL = '/universal-connectivity/dm/1.0.0'
const FILE_EXCHANGE_PROTOCOL = '/universal-connectivity-file/1'

const args = parseArgs('uc-peer', { dial: [], listen: [] })

const proto = await protobuf.load(
  fileURLToPath(new URL('../../crates/protocol/proto/uc_direct_message.proto', import.meta.url))
)
/** A protobufjs type as the codec pbStream expects. */
const codec = type => ({
  encode: m => type.encode(type.fromObject(m)).finish(),
  decode: bytes => type.toObject(type.decode(bytes.subarray()), { longs: Number, enums: Number })
})
const Request = codec(proto.lookupType('dm.DirectMessageRequest'))
const Response = codec(proto.lookupType('dm.DirectMessageResponse'))
const OK = 200
const metadata = () => ({ clientVersion: '0.0.1', timestamp: Date.now() })

const node = await createLibp2p({
  addresses: { listen: args.listen },
  transports: [tcp(), webSockets(), circuitRelayTransport()],
  connectionEncrypters: [noise()],
  streamMuxers: [yamux()],
  connectionGater: { denyDialMultiaddr: () => false },
  services: {
    identify: identify(),
    pubsub: gossipsub({
      allowPublishToZeroTopicPeers: true,
      ignoreDuplicatePublishError: true,
      // universal-connectivity's message id: SHA-256 of the sequence
      // number in decimal.
      msgIdFn: msg => new Uint8Array(
        createHash('sha256').update(msg.sequenceNumber.toString()).digest()
      )
    })
  }
})

node.services.pubsub.subscribe(CHAT_TOPIC)
node.services.pubsub.subscribe(CHAT_FILE_TOPIC)
node.services.pubsub.addEventListener('message', e => {
  const m = e.detail
  // Like its peer: signed messages only.
  if (m.type !== 'signed') return
  if (m.topic === CHAT_TOPIC) {
    emit({ type: 'message', from: m.from.toString(), nick: null, text: new TextDecoder().decode(m.data) })
  } else if (m.topic === CHAT_FILE_TOPIC) {
    fetchFile(m.from, new TextDecoder().decode(m.data)).catch(fail)
  }
})

const sha256 = bytes => createHash('sha256').update(bytes).digest('hex')

/** Our files, by id, as its peer keeps them. */
const files = new Map()

/** Fetches an announced file from its announcer, as its peer does. */
async function fetchFile (from, id) {
  const stream = await node.dialProtocol(from, FILE_EXCHANGE_PROTOCOL, {
    signal: AbortSignal.timeout(10000),
    runOnLimitedConnection: true
  })
  const lp = lpStream(stream)
  const signal = AbortSignal.timeout(10000)
  await lp.write(new TextEncoder().encode(id), { signal })
  const body = (await lp.read({ signal })).subarray()
  await stream.close()
  emit({ type: 'file', from: from.toString(), id, size: body.length, sha256: sha256(body) })
}

await node.handle(FILE_EXCHANGE_PROTOCOL, async stream => {
  try {
    const lp = lpStream(stream)
    const signal = AbortSignal.timeout(10000)
    const id = new TextDecoder().decode((await lp.read({ signal })).subarray())
    const body = files.get(id)
    if (body === undefined) throw new Error(`no file ${id}`)
    await lp.write(body, { signal })
    await stream.close()
  } catch (err) {
    stream.abort(err)
    fail(err)
  }
}, { runOnLimitedConnection: true })

/** Announces the file at `path` under a new UUID, as its peer does. */
async function sendFile (path) {
  const body = new Uint8Array(await readFile(path))
  const id = randomUUID()
  files.set(id, body)
  await node.services.pubsub.publish(CHAT_FILE_TOPIC, new TextEncoder().encode(id))
  emit({ type: 'file_sent', id, sha256: sha256(body) })
}

// (js-libp2p 3 hands a handler the stream and the connection; the version
// universal-connectivity pins hands it one object holding both.)
await node.handle(DM_PROTOCOL, async (stream, connection) => {
  try {
    const pb = pbStream(stream)
    const signal = AbortSignal.timeout(5000)
    const request = await pb.read(Request, { signal })
    await pb.write({ status: OK, metadata: metadata() }, Response, { signal })
    await stream.close()
    emit({ type: 'dm', from: connection.remotePeer.toString(), text: request.content })
  } catch (err) {
    stream.abort(err)
    fail(err)
  }
})

/** Sends a direct message as its peer does, and checks the answer. */
async function sendDm (to, text) {
  const peer = peerIdFromString(to)
  const stream = await node.dialProtocol(peer, DM_PROTOCOL, { signal: AbortSignal.timeout(10000) })
  const pb = pbStream(stream)
  const signal = AbortSignal.timeout(5000)
  await pb.write({ content: text, type: 'text/plain', metadata: metadata() }, Request, { signal })
  const response = await pb.read(Response, { signal })
  await stream.close()
  if (response.status !== OK) throw new Error(`status ${response.status}`)
  emit({ type: 'dm_sent', to })
}

for (const addr of args.dial) {
  await node.dial(multiaddr(addr), { signal: AbortSignal.timeout(30000) })
}
if (args.listen.includes('/p2p-circuit')) {
  const deadline = Date.now() + 20000
  while (!node.getMultiaddrs().some(a => a.toString().includes('/p2p-circuit'))) {
    if (Date.now() > deadline) {
      fail(new Error('no relay reservation'))
      process.exit(1)
    }
    await new Promise(resolve => setTimeout(resolve, 100))
  }
}
emit({ type: 'ready', peer: node.peerId.toString(), addrs: node.getMultiaddrs().map(a => a.toString()) })

const lines = createInterface({ input: process.stdin })
lines.on('line', line => {
  const dm = line.match(/^\/dm (\S+) (.+)$/)
  const file = line.match(/^\/file (.+)$/)
  if (dm !== null) {
    sendDm(dm[1], dm[2]).catch(fail)
  } else if (file !== null) {
    sendFile(file[1]).catch(fail)
  } else if (line !== '') {
    node.services.pubsub.publish(CHAT_TOPIC, new TextEncoder().encode(line)).catch(fail)
  }
})
lines.on('close', async () => {
  await node.stop()
  process.exit(0)
})
