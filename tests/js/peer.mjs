// One stock Yjs client (yjs + y-websocket WebsocketProvider over `ws`) on one
// document, driven by the Python tests through JSON lines.
//
//   node peer.mjs <serverUrl> <room> [token]   e.g. ws://127.0.0.1:8888/ws "my doc"
//
// stdout, one JSON object a line:
//   {"event": "ready", "clientID": n}      once, at start
//   {"event": "synced"}                    the first time the provider is synced
//   {"id": k, ...}                         the reply to command k
//   {"id": k, "error": "..."}              the command failed
// stdin, one JSON object a line, each with an "id" and a "cmd":
//   state                 -> {text, sv, synced, connected, awareness, map, array,
//                            types: {messageType: count received}, errors: [console.error]}
//   edit {seed, ops, label} -> seeded random inserts/deletes on the text "content";
//                            replies {ops, remoteDuring} once done
//   insert {index, text}  -> one insert
//   type {text, delay}    -> type text at the end, one character every delay ms
//   awareness {state}     -> set the local awareness state
//   set {key, value}      -> Y.Map "meta"[key] = value
//   push {items}          -> append items to Y.Array "list"
//   digest                -> {text_length, text_sha256, map_size, array_length, connects,
//                            synced, connected}: a large document's facts (tests/bigdoc.py)
//   bulk {seed, bytes}    -> about `bytes` of seeded edits (text pieces and "meta" entries),
//                            in one transaction each 1 MB; replies {text_length, map_size}
//   quit                  -> destroy the provider, reply, exit 0
import * as Y from 'yjs'
import { WebsocketProvider } from 'y-websocket'
import WebSocket from 'ws'
import { answer, emit } from './commands.mjs'
import { createHash } from 'node:crypto'

const [serverUrl, room, token] = process.argv.slice(2)
if (!serverUrl || !room) {
  process.stderr.write('usage: node peer.mjs <serverUrl> <room>\n')
  process.exit(2)
}

// What arrives, by y-protocols message type (the first varuint, one byte below 128),
// and what the provider logs as an error (it does so for a type it does not know).
const types = {}
const errors = []
console.error = (...args) => errors.push(args.map(String).join(' '))
class CountingWebSocket extends WebSocket {
  constructor (...args) {
    super(...args)
    this.addEventListener('message', (event) => {
      const type = new Uint8Array(event.data)[0]
      types[type] = (types[type] || 0) + 1
    })
  }
}

const doc = new Y.Doc()
const text = doc.getText('content')
// disableBc: peers must talk only through the server, never through
// BroadcastChannel (which Node has, and which y-websocket would otherwise use).
const provider = new WebsocketProvider(serverUrl, room, doc, {
  WebSocketPolyfill: CountingWebSocket,
  disableBc: true,
  params: token ? { token } : {}
})
let connects = 0 // how many times the socket (re)connected
provider.on('status', ({ status }) => { if (status === 'connected') connects++ })


let remoteUpdates = 0
doc.on('update', (_update, origin) => {
  if (origin === provider) remoteUpdates++
})

provider.once('sync', () => emit({ event: 'synced' }))

// mulberry32: a small seeded PRNG, so a failing run can be replayed.
function prng (seed) {
  let a = seed >>> 0
  return () => {
    a = (a + 0x6d2b79f5) >>> 0
    let t = a
    t = Math.imul(t ^ (t >>> 15), t | 1)
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61)
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296
  }
}

const tick = (ms) => new Promise((resolve) => setTimeout(resolve, ms))

async function edit ({ seed, ops, label }) {
  const rnd = prng(seed)
  const before = remoteUpdates
  for (let i = 0; i < ops; i++) {
    const len = text.length
    const r = rnd()
    const word = `${label}${i} `
    if (len > 0 && r < 0.3) {
      const pos = Math.floor(rnd() * len)
      text.delete(pos, Math.min(len - pos, 1 + Math.floor(rnd() * 6)))
    } else if (r < 0.5) {
      text.insert(0, word) // every peer hammers the same position
    } else if (r < 0.6) {
      text.insert(len, word)
    } else {
      text.insert(Math.floor(rnd() * (len + 1)), word)
    }
    // Yield to the event loop so remote updates land between local edits.
    // At least 1 ms a step, so three peers' 300 edits overlap in time even
    // when their processes start editing a few hundred ms apart.
    await tick(rnd() < 0.5 ? 1 : 3)
  }
  return { ops, remoteDuring: remoteUpdates - before }
}

function state () {
  const sv = {}
  for (const [client, clock] of Y.decodeStateVector(Y.encodeStateVector(doc))) {
    sv[client] = clock
  }
  const awareness = {}
  for (const [client, s] of provider.awareness.getStates()) awareness[client] = s
  return {
    text: text.toString(),
    sv,
    synced: provider.synced,
    connected: provider.wsconnected,
    connects,
    awareness,
    map: doc.getMap('meta').toJSON(),
    array: doc.getArray('list').toJSON(),
    types,
    errors
  }
}

function digest () {
  const content = text.toString()
  return {
    text_length: content.length,
    text_sha256: createHash('sha256').update(content, 'utf8').digest('hex'),
    map_size: doc.getMap('meta').size,
    array_length: doc.getArray('list').length,
    connects,
    remote_updates: remoteUpdates,
    synced: provider.synced,
    connected: provider.wsconnected
  }
}

function bulk ({ seed, bytes }) {
  const rnd = prng(seed)
  const words = Array.from({ length: 1500 }, () =>
    Array.from({ length: 2 + Math.floor(rnd() * 7) }, () => 'etaoinshrdlucmfw'[Math.floor(rnd() * 16)]).join(''))
  let pool = ''
  while (pool.length < (1 << 20) + 70000) pool += words[Math.floor(rnd() * rnd() * words.length)] + ' '
  const meta = doc.getMap('meta')
  let done = 0
  let key = 0
  while (done < bytes) {
    doc.transact(() => {
      for (let k = 0; k < 16 && done < bytes; k++) {
        const start = Math.floor(rnd() * (pool.length - 65536))
        text.insert(Math.floor(rnd() * (text.length + 1)), pool.slice(start, start + 60000))
        meta.set(`offline-${seed}-${key++}`, pool.slice(start, start + 4000))
        done += 64000
      }
    })
  }
  return { text_length: text.length, map_size: meta.size }
}

const commands = {
  state,
  digest,
  bulk,
  edit,
  insert: ({ index, text: s }) => { text.insert(index, s); return {} },
  type: async ({ text: s, delay }) => {
    for (const ch of s) {
      text.insert(text.length, ch)
      await tick(delay)
    }
    return { typed: s.length }
  },
  awareness: ({ state: s }) => { provider.awareness.setLocalState(s); return {} },
  set: ({ key, value }) => { doc.getMap('meta').set(key, value); return {} },
  push: ({ items }) => { doc.getArray('list').push(items); return {} },
  quit: () => { provider.destroy(); return {} }
}

answer(commands)

emit({ event: 'ready', clientID: doc.clientID })
