// A stock y-websocket client that edits a document while a browser has it open
// (tests/test_editor_page.py).
//
//   node editor_peer.mjs <serverUrl> <document name> <user name> <text>
//
// Connects (the name is percent-encoded into the URL), shows up in awareness as
// <user name>, and once synced appends <text> to the Y.Text "content". It prints
// {"event": "synced"} and then {"event": "inserted", "text": ...} as JSON lines,
// stays connected so the page keeps seeing it, and exits 0 when stdin closes.
import * as Y from 'yjs'
import { WebsocketProvider } from 'y-websocket'
import WebSocket from 'ws'

const [serverUrl, name, userName, text] = process.argv.slice(2)
if (!serverUrl || !name || !userName || text === undefined) {
  process.stderr.write('usage: node editor_peer.mjs <serverUrl> <document name> <user name> <text>\n')
  process.exit(2)
}

const doc = new Y.Doc()
const content = doc.getText('content')
const provider = new WebsocketProvider(serverUrl, encodeURIComponent(name), doc, {
  WebSocketPolyfill: WebSocket,
  disableBc: true // talk only through the server
})
provider.awareness.setLocalStateField('user', { name: userName, color: '#12a594', colorLight: '#12a59433' })

const emit = (obj) => process.stdout.write(JSON.stringify(obj) + '\n')

provider.once('sync', () => {
  emit({ event: 'synced' })
  content.insert(content.length, text)
  // Put our caret after the text, as an editor would, so the page draws it.
  const cursor = Y.createRelativePositionFromTypeIndex(content, content.length)
  provider.awareness.setLocalStateField('cursor', { anchor: cursor, head: cursor })
  emit({ event: 'inserted', text: content.toString() })
})

process.stdin.resume()
process.stdin.on('end', () => {
  provider.destroy()
  process.exit(0)
})
