// Document-name spellings through the stock client, driven by the Python tests.
//
//   node names.mjs <serverUrl> <json>
//
// <json> is {"same": [[a, b, token], ...], "upgrade": [segment, ...]}.
// For each [a, b, token] a WebsocketProvider on room `a` inserts `token`, and a
// second provider (own Y.Doc, no BroadcastChannel) on room `b` must receive it:
// prints {"event": "result", "same": [a, b], "text": <b's text>} (or "error" after 5 s).
// y-websocket appends the room name to the URL as given, so `a` and `b` are
// the raw and percent-encoded spellings of one name.
// For each upgrade segment, opens a bare `ws` socket (what the provider uses)
// on <serverUrl>/<segment> and prints {"event": "result", "upgrade": segment, "status": code},
// 101 when the upgrade succeeded.
// Ends with {"event": "done"}.
import * as Y from 'yjs'
import { WebsocketProvider } from 'y-websocket'
import WebSocket from 'ws'

const [serverUrl, json] = process.argv.slice(2)
const { same = [], upgrade = [] } = JSON.parse(json)
const emit = (obj) => process.stdout.write(JSON.stringify(obj) + '\n')

function connect (room) {
  const doc = new Y.Doc()
  const provider = new WebsocketProvider(serverUrl, room, doc, {
    WebSocketPolyfill: WebSocket,
    disableBc: true
  })
  return { doc, provider, text: doc.getText('content') }
}

function until (check, ms, what) {
  return new Promise((resolve, reject) => {
    const started = Date.now()
    const timer = setInterval(() => {
      if (check()) {
        clearInterval(timer)
        resolve()
      } else if (Date.now() - started > ms) {
        clearInterval(timer)
        reject(new Error(`timed out waiting for ${what}`))
      }
    }, 10)
  })
}

async function sameDocument ([a, b, token]) {
  const first = connect(a)
  const second = connect(b)
  try {
    await until(() => first.provider.synced && second.provider.synced, 5000, 'sync')
    first.text.insert(first.text.length, token)
    await until(() => second.text.toString().includes(token), 5000, `${token} via ${b}`)
    return { event: 'result', same: [a, b], text: second.text.toString() }
  } catch (err) {
    return { event: 'result', same: [a, b], error: String(err), text: second.text.toString() }
  } finally {
    first.provider.destroy()
    second.provider.destroy()
  }
}

function upgradeStatus (segment) {
  return new Promise((resolve) => {
    const ws = new WebSocket(serverUrl + '/' + segment)
    ws.on('unexpected-response', (_req, res) => {
      resolve({ event: 'result', upgrade: segment, status: res.statusCode })
      res.resume()
      ws.terminate()
    })
    ws.on('open', () => {
      resolve({ event: 'result', upgrade: segment, status: 101 })
      ws.terminate()
    })
    ws.on('error', (err) => resolve({ event: 'result', upgrade: segment, error: String(err) }))
  })
}

for (const pair of same) emit(await sameDocument(pair))
for (const segment of upgrade) emit(await upgradeStatus(segment))
emit({ event: 'done' })
process.exit(0)
