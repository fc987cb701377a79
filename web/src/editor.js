// The editor page, <base>/d/<name>: CodeMirror 6 on the Y.Text "content", presence,
// connection status, offline copy in IndexedDB, copy link and downloads.
import * as Y from 'yjs'
import { WebsocketProvider } from 'y-websocket'
import { IndexeddbPersistence } from 'y-indexeddb'
import { yCollab, yRemoteSelections, yUndoManagerKeymap } from 'y-codemirror.next'
import { EditorState } from '@codemirror/state'
import {
  EditorView, drawSelection, dropCursor, highlightActiveLine, highlightActiveLineGutter,
  highlightSpecialChars, keymap, lineNumbers, placeholder
} from '@codemirror/view'
import { defaultKeymap } from '@codemirror/commands'
import { bracketMatching, indentOnInput } from '@codemirror/language'
import { markdown } from '@codemirror/lang-markdown'
import { highlightSelectionMatches, searchKeymap } from '@codemirror/search'

import {
  COLOR_NAMES, PALETTE, api, apiUrl, claims, editorHref, h, homeHref, initials, keepPagesOffline, lighten,
  loadUser, nameOfPath, saveUser, syncUrl, toast, token
} from './common.js'
import { remoteCarets, safeColor, safeName, verifiedSub } from './carets.js'
import { Reconnector, keepAlive } from './connection.js'
import { SaveTracker, savedIndicator } from './saved.js'
import { theme } from './theme.js'
import { setupHistory } from './history.js'

const $ = (id) => document.getElementById(id)

const docName = nameOfPath(window.location.pathname)
document.title = `${docName} · collab`
$('doc-name').textContent = docName
$('doc-name').title = docName

// ---- the shared document, its server connection and its offline copy ----

const ydoc = new Y.Doc()
const ytext = ydoc.getText('content')
const provider = new WebsocketProvider(
  syncUrl(),
  encodeURIComponent(docName), // the provider appends the room name to the URL as is
  ydoc,
  { connect: false, params: token ? { token } : {} }
)
const offlineCopy = new IndexeddbPersistence(`collab:${docName}`, ydoc)
const awareness = provider.awareness

// ---- who I am ----

let me = loadUser()
const publishMe = () =>
  awareness.setLocalStateField('user', { name: me.name, color: me.color, colorLight: lighten(me.color) })
publishMe()

// ---- the editor ----

// A read-only token: the server would drop our edits, so do not let anyone type them.
const readOnly = claims.mode === 'ro'
$('read-only').hidden = !readOnly
// Are our edits saved? (Rendered under "saved" below; its events come once connected.)
const tracker = new SaveTracker({ provider, offlineCopy, readOnly, onChange: () => renderSaved() })

const undoManager = new Y.UndoManager(ytext) // yCollab tracks only this page's own edits
const view = new EditorView({
  parent: $('editor'),
  state: EditorState.create({
    doc: ytext.toString(),
    extensions: [
      lineNumbers(),
      highlightActiveLineGutter(),
      highlightSpecialChars(),
      drawSelection(),
      dropCursor(),
      indentOnInput(),
      bracketMatching(),
      highlightActiveLine(),
      highlightSelectionMatches(),
      EditorView.lineWrapping,
      markdown(),
      keymap.of([...yUndoManagerKeymap, ...searchKeymap, ...defaultKeymap]),
      // yCollab: sync with the Y.Text, undo/redo of own edits; carets: our own plugin
      yCollab(ytext, awareness, { undoManager }).filter((ext) => ext !== yRemoteSelections),
      remoteCarets,
      theme,
      placeholder('Start writing… (Markdown works)'),
      EditorView.contentAttributes.of({ 'aria-label': `Text of ${docName}` }),
      EditorState.readOnly.of(readOnly),
      EditorView.editable.of(!readOnly)
    ]
  })
})

// ---- connection status ----

const statusEl = $('status')
const statusText = $('status-text')
const banner = $('banner')
let retryAt = 0

/** [status word (announced), detail (not announced: it counts down), tooltip] */
const describe = (state) => {
  switch (state.status) {
    case 'online': return ['Online', '', 'Connected: edits are shared live']
    case 'connecting': return ['Connecting…', '', 'Connecting to the server']
    case 'refused': return ['Disconnected', '', state.message]
    default: {
      const seconds = Math.ceil((retryAt - Date.now()) / 1000)
      const detail = provider.ws || seconds <= 0 ? 'reconnecting…' : `retrying in ${seconds}s`
      return ['Offline', `· ${detail}`, 'Offline: your edits are kept in this browser and merge when the connection is back']
    }
  }
}

const renderStatus = (state) => {
  retryAt = state.retryAt || 0
  const [text, detail, title] = describe(state)
  statusEl.dataset.status = state.status
  if (statusText.textContent !== text) statusText.textContent = text
  $('status-detail').textContent = detail
  statusEl.title = title
  banner.hidden = state.status !== 'refused'
  if (state.status === 'refused') $('banner-text').textContent = state.message
  if (state.code === 4404 && !dropped) { // never resurrect a deleted document
    tracker.forget()
    dropped = dropOfflineCopy()
  }
  renderSaved()
}

// The offline copy of a deleted document (or of an older one of the same name)
// goes, and "Reconnect" then starts from an empty page: the copy in memory must
// not sync back either.
let dropped = null
const dropOfflineCopy = async () => {
  await offlineCopy.clearData()
  await new Promise((resolve) => { // clearData does not wait for the deletion itself
    const request = indexedDB.deleteDatabase(offlineCopy.name)
    request.onsuccess = request.onerror = request.onblocked = resolve
  })
}

const reconnector = new Reconnector(provider, {
  onChange: renderStatus,
  probe: () => api(apiUrl(docName, '/text'))
})
setInterval(() => {
  if (reconnector.state.status === 'offline') renderStatus(reconnector.state)
}, 1000)
keepAlive(provider)
let leaving = false // reloading on purpose: the edits that would be lost are gone already
$('banner-retry').addEventListener('click', () => {
  if (!dropped) return reconnector.retry()
  dropped.then(() => {
    leaving = true
    window.location.reload()
  })
})
$('status-retry').addEventListener('click', () => reconnector.connectNow())

// ---- saved: "Saving…", "Saved", "Not saved — offline, kept in this browser" ----

const savedEl = $('saved')
const renderSaved = savedIndicator(savedEl, tracker, () => reconnector.state.status === 'refused')
window.addEventListener('beforeunload', (event) => {
  if (!tracker.unsaved || leaving) return
  event.preventDefault()
  event.returnValue = '' // older browsers want this too
})

// ---- presence ----

const presenceEl = $('presence')
const avatar = (user, extra = '') =>
  h('span', { class: `avatar ${extra}`, style: `--user: ${user.color}`, 'aria-hidden': 'true' }, initials(user.name))

/** "✓ ann": who the server says this person signed in as (screen readers hear "signed in as ann"). */
const verifiedBadge = (sub) =>
  h('span', { class: 'verified', title: `Signed in as ${sub} (verified by the server)` },
    h('span', { 'aria-hidden': 'true' }, '\u2713 '), h('span', { class: 'visually-hidden' }, 'signed in as '), sub)

/** How a person is named in tooltips and labels: "Ann (signed in as ann)". */
const fullName = (p) => (p.sub ? `${p.name} (signed in as ${p.sub})` : p.name)

const renderPresence = () => {
  const people = []
  awareness.getStates().forEach((state, clientID) => {
    const user = state && state.user
    if (!user) return
    people.push({
      clientID,
      name: safeName(user.name),
      color: safeColor(user.color), // remote input: no CSS injection
      sub: verifiedSub(user),
      self: clientID === ydoc.clientID
    })
  })
  people.sort((a, b) => (b.self - a.self) || a.name.localeCompare(b.name))
  const key = JSON.stringify(people)
  if (key === renderPresence.last) return // a caret moved: nothing to redraw here
  renderPresence.last = key
  presenceEl.replaceChildren(...people.map((p) =>
    h('li', { class: 'person', style: `--user: ${p.color}`, 'data-client': String(p.clientID), title: p.self ? `${fullName(p)} (you)` : fullName(p) },
      avatar(p),
      h('span', { class: 'person-name' }, p.name, p.self ? h('span', { class: 'you' }, ' (you)') : null),
      p.sub ? verifiedBadge(p.sub) : null)
  ))
  $('presence-count').textContent = people.length === 1 ? 'Only you' : `${people.length} here`
  presenceEl.setAttribute('aria-label', `People here: ${people.map(fullName).join(', ')}`)
}
awareness.on('change', renderPresence)
renderPresence()

// ---- my name and colour ----

const meButton = $('me-button')
const mePanel = $('me-panel')
const nameInput = $('me-name')
const colorInput = $('me-color')

const renderMe = () => {
  meButton.replaceChildren(avatar(me), h('span', { class: 'me-label' }, me.name))
  meButton.setAttribute('aria-label', `Your name and colour: ${me.name}`)
  if (document.activeElement !== nameInput) nameInput.value = me.name // do not fight the typist
  colorInput.value = me.color
  for (const swatch of $('me-swatches').children) {
    swatch.setAttribute('aria-pressed', String(swatch.dataset.color === me.color))
  }
}
const updateMe = (changes) => {
  me = { ...me, ...changes }
  saveUser(me)
  publishMe()
  renderMe()
}
$('me-swatches').replaceChildren(...PALETTE.map((color) =>
  h('button', {
    type: 'button',
    class: 'swatch',
    style: `--user: ${color}`,
    'data-color': color,
    'aria-label': COLOR_NAMES[color] || color,
    onclick: () => updateMe({ color })
  })
))
const togglePanel = (open) => {
  mePanel.hidden = !open
  meButton.setAttribute('aria-expanded', String(open))
  if (open) nameInput.select()
}
meButton.addEventListener('click', () => togglePanel(mePanel.hidden))
nameInput.addEventListener('input', () => {
  const name = nameInput.value.trim().slice(0, 40)
  if (name) updateMe({ name })
})
colorInput.addEventListener('input', () => updateMe({ color: colorInput.value.toLowerCase() }))
mePanel.addEventListener('keydown', (event) => {
  if (event.key === 'Escape' || (event.key === 'Enter' && event.target === nameInput)) {
    event.preventDefault()
    togglePanel(false)
    meButton.focus()
  }
})
document.addEventListener('click', (event) => {
  if (!mePanel.hidden && !mePanel.contains(event.target) && !meButton.contains(event.target)) {
    togglePanel(false)
  }
})
renderMe()

// ---- sharing and export ----

const copyText = async (text) => {
  try {
    await navigator.clipboard.writeText(text)
  } catch (_) {
    // no Clipboard API (plain http on another host): the old way
    const field = h('textarea', { style: 'position: fixed; opacity: 0' }, text)
    document.body.append(field)
    field.select()
    document.execCommand('copy')
    field.remove()
  }
}
$('copy-link').addEventListener('click', async () => {
  // The link never carries the access token: each person uses their own.
  await copyText(window.location.origin + editorHref(docName, false))
  toast('Link copied')
})

const fileStem = docName.replace(/\.(md|markdown|txt)$/i, '').replace(/[\\/:*?"<>|\p{Cc}]+/gu, '_') || 'document'
const downloadMenu = $('download-menu')
const download = (ext) => {
  const type = ext === 'md' ? 'text/markdown' : 'text/plain'
  const url = URL.createObjectURL(new Blob([ytext.toString()], { type: `${type};charset=utf-8` }))
  const link = h('a', { href: url, download: `${fileStem}.${ext}`, hidden: true })
  document.body.append(link)
  link.click()
  link.remove()
  setTimeout(() => URL.revokeObjectURL(url), 10000)
  downloadMenu.open = false
}
downloadMenu.addEventListener('keydown', (event) => {
  if (event.key === 'Escape' && downloadMenu.open) {
    downloadMenu.open = false
    downloadMenu.querySelector('summary').focus()
  }
})
document.addEventListener('click', (event) => {
  if (downloadMenu.open && !downloadMenu.contains(event.target)) downloadMenu.open = false
})
$('download-txt').addEventListener('click', () => download('txt'))
$('download-md').addEventListener('click', () => download('md'))

$('home-link').href = homeHref

// ---- history ----

const versionHistory = setupHistory({ docName, ytext, readOnly, liveEl: $('editor'), onClose: () => view.focus() })

// ---- go ----

tracker.ready.then(() => reconnector.connectNow()) // the copy's generation is known first
view.focus()
keepPagesOffline()

// For tests and debugging in the console.
window.collab = { ydoc, ytext, provider, awareness, view, undoManager, reconnector, offlineCopy, history: versionHistory, saved: tracker }
