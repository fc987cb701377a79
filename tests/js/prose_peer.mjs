// One stock Yjs client editing a rich-text document as y-prosemirror stores it:
// a root Y.XmlFragment of <paragraph> Y.XmlElements, each holding one Y.XmlText.
// Driven by the Python tests through JSON lines, like peer.mjs.
//
//   node prose_peer.mjs <serverUrl> <room> [fragment]     fragment: default "prosemirror"
//
// stdout: {"event": "ready", "clientID": n}, {"event": "synced"}, replies {"id": k, ...}
// stdin, one JSON object a line, each with an "id" and a "cmd":
//   paragraph {text}      -> append <paragraph> with a Y.XmlText holding text (one transaction)
//   type {paragraph, count, label, marks, yieldEvery}
//                         -> append `${label}${i} ` for i < count at the end of that paragraph's
//                            text, one transaction each, as y-prosemirror types (insert with the
//                            marks as attributes); yields to the event loop every yieldEvery
//   state                 -> {xml, texts, sv, structs, synced, connected}: structs = how many
//                            blocks each client has in this document (Yjs merges a client's
//                            consecutive characters into one block)
//   quit                  -> destroy the provider, reply, exit 0
import * as Y from 'yjs'
import { WebsocketProvider } from 'y-websocket'
import WebSocket from 'ws'
import { answer, emit } from './commands.mjs'

const [serverUrl, room, name = 'prosemirror'] = process.argv.slice(2)
if (!serverUrl || !room) {
  process.stderr.write('usage: node prose_peer.mjs <serverUrl> <room> [fragment]\n')
  process.exit(2)
}

const doc = new Y.Doc()
const fragment = doc.getXmlFragment(name)
const provider = new WebsocketProvider(serverUrl, room, doc, {
  WebSocketPolyfill: WebSocket,
  disableBc: true
})
provider.once('sync', () => emit({ event: 'synced' }))

const tick = () => new Promise((resolve) => setTimeout(resolve, 0))
const textOf = (index) => fragment.get(index).get(0)

function paragraph ({ text }) {
  doc.transact(() => {
    const p = new Y.XmlElement('paragraph')
    const t = new Y.XmlText()
    t.insert(0, text)
    p.insert(0, [t])
    fragment.insert(fragment.length, [p])
  })
  return {}
}

async function type ({ paragraph: index, count, label, marks = {}, yieldEvery = 50 }) {
  const text = textOf(index)
  for (let i = 0; i < count; i++) {
    text.insert(text.length, `${label}${i} `, marks)
    if (i % yieldEvery === yieldEvery - 1) await tick() // the server's frames land meanwhile
  }
  return { typed: count }
}

function state () {
  const sv = {}
  for (const [client, clock] of Y.decodeStateVector(Y.encodeStateVector(doc))) sv[client] = clock
  const structs = {}
  for (const [client, list] of doc.store.clients) structs[client] = list.length
  const texts = fragment.toArray().map((p) =>
    p.toArray().map((t) => t.toDelta().map((op) => op.insert).join('')).join(''))
  return {
    xml: fragment.toString(),
    texts,
    sv,
    structs,
    synced: provider.synced,
    connected: provider.wsconnected
  }
}

const commands = {
  paragraph,
  type,
  state,
  quit: () => { provider.destroy(); return {} }
}

emit({ event: 'ready', clientID: doc.clientID })

answer(commands)
