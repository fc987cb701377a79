// The home page, <base>/: the documents (from <base>/api/docs), open or create by name, delete.
import { api, apiUrl, claims, docsUrl, editorHref, formatAgo, formatBytes, h, homeHref, keepPagesOffline, nameProblem, toast, token } from './common.js'

const $ = (id) => document.getElementById(id)
const REFRESH_MS = 5000
// Deleting needs the admin role (`admin: true`); without a token access control is off.
// Only what the page offers: the server refuses a non-admin's delete either way.
const canDelete = !token || claims.admin === true

$('home-link').href = homeHref

// ---- open or create ----

$('open-form').addEventListener('submit', (event) => {
  event.preventDefault()
  const name = $('doc-input').value.trim()
  const problem = nameProblem(name)
  $('open-error').textContent = problem || ''
  $('doc-input').setAttribute('aria-invalid', String(Boolean(problem)))
  if (!problem) window.location.href = editorHref(name)
})

// ---- the list ----

let docs = []

let shown = ''

const renderList = () => {
  const now = Date.now()
  const ago = docs.map((doc) => formatAgo(new Date(doc.modified), now))
  const key = JSON.stringify([docs, ago])
  if (key === shown) return // unchanged: keep the DOM (and the keyboard focus) as it is
  shown = key
  // A row may be redrawn under the keyboard focus: put the focus back afterwards.
  const active = document.activeElement
  const activeRow = active && active.closest('#docs-body tr')
  const refocus = activeRow && { name: activeRow.dataset.name, tag: active.tagName }

  $('docs-body').replaceChildren(...docs.map((doc, i) => {
    const modified = new Date(doc.modified)
    return h('tr', { 'data-name': doc.name },
      h('th', { scope: 'row', class: 'doc-cell' },
        h('a', { href: editorHref(doc.name), class: 'doc-link' }, doc.name)),
      h('td', { class: 'num col-size' }, formatBytes(doc.size)),
      h('td', { class: 'col-modified' }, h('time', { datetime: doc.modified, title: modified.toLocaleString() }, ago[i])),
      h('td', {}, doc.clients > 0
        ? h('span', { class: 'live' }, h('span', { class: 'dot', 'aria-hidden': 'true' }),
          doc.clients === 1 ? '1 person' : `${doc.clients} people`)
        : h('span', { class: 'muted' }, 'nobody')),
      h('td', { class: 'row-actions' }, canDelete && h('button', {
        type: 'button',
        class: 'button danger subtle',
        'aria-label': `Delete ${doc.name}`,
        onclick: () => confirmDelete(doc.name)
      }, 'Delete'))
    )
  }))
  if (refocus) {
    const row = [...$('docs-body').rows].find((tr) => tr.dataset.name === refocus.name)
    const target = row && row.querySelector(refocus.tag.toLowerCase())
    if (target) target.focus()
  }
  $('docs').hidden = docs.length === 0
  $('empty').hidden = docs.length !== 0
  const editing = docs.reduce((sum, doc) => sum + doc.clients, 0)
  $('docs-summary').textContent = docs.length === 0
    ? ''
    : `${docs.length} document${docs.length === 1 ? '' : 's'}${editing ? ` · ${editing} editing now` : ''}`
}

const showListError = (text) => {
  $('list-error').hidden = !text
  $('list-error').textContent = text || ''
  if (text && !shown) $('docs-summary').textContent = '' // nothing loaded yet: not "Loading…"
}

const refresh = async () => {
  try {
    const res = await api(docsUrl)
    if (res.status === 401 || res.status === 403) {
      showListError('This server needs an access token: open the page with ?token=… in its address.')
      return
    }
    if (!res.ok) throw new Error(`HTTP ${res.status}`)
    docs = (await res.json()).sort((a, b) => b.modified.localeCompare(a.modified))
    showListError('')
    renderList()
  } catch (err) {
    showListError(`Cannot load the documents (${err.message}). Retrying…`)
  }
}

// ---- delete, after a confirmation ----

const dialog = $('confirm-delete')
const confirmDelete = (name) => {
  $('confirm-title').textContent = `Delete “${name}”?`
  dialog.returnValue = ''
  dialog.showModal()
  dialog.addEventListener('close', async () => {
    if (dialog.returnValue !== 'delete') return
    const res = await api(apiUrl(name), { method: 'DELETE' })
    if (res.ok || res.status === 404) {
      // Forget this browser's offline copy too, or reopening the name would bring it back.
      indexedDB.deleteDatabase(`collab:${name}`)
      toast(`Deleted “${name}”`)
    } else {
      toast(`Could not delete “${name}”: ${(await res.text()) || res.status}`)
    }
    refresh()
  }, { once: true })
}

refresh()
setInterval(() => { if (!document.hidden) refresh() }, REFRESH_MS)
document.addEventListener('visibilitychange', () => { if (!document.hidden) refresh() })
$('doc-input').focus()
keepPagesOffline()
