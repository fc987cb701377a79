// Version history in the editor page: a panel with a time slider over the versions (named
// ones starred), a list grouped by day, a read-only preview with the changes highlighted
// (@codemirror/merge), and Restore / Name / Copy / Download. #version=ID links to a version.
import { EditorState } from '@codemirror/state'
import { EditorView, lineNumbers } from '@codemirror/view'
import { unifiedMergeView } from '@codemirror/merge'
import { markdown } from '@codemirror/lang-markdown'

import { PALETTE, api, apiUrl, h, initials, toast } from './common.js'
import { safeColor, safeName } from './carets.js'
import { theme } from './theme.js'

const $ = (id) => document.getElementById(id)

const REASONS = {
  quiet: 'Edits',
  max: 'Edits',
  leave: 'Edits',
  stop: 'Edits',
  named: 'Named version',
  'pre-restore': 'Before restore',
  restore: 'Restored'
}

const dayOf = (date) => date.toLocaleDateString(undefined, { weekday: 'long', day: 'numeric', month: 'long', year: 'numeric' })
const timeOf = (date) => date.toLocaleTimeString(undefined, { hour: '2-digit', minute: '2-digit', second: '2-digit' })

/** What a version is called in the list and the slider. */
const titleOf = (v, byId) => {
  if (v.label) return v.label
  if (v.reason === 'restore' && v.restored_from) {
    const from = byId.get(v.restored_from)
    return from ? `Restored from ${timeOf(new Date(from.created))}` : `Restored from version ${v.restored_from}`
  }
  return REASONS[v.reason] || 'Edits'
}

/** The colour the author showed, else one picked from their name (stable across versions). */
const colorOf = (a) => {
  if (a.color) return safeColor(a.color)
  let hash = 0
  for (const ch of a.user || a.name || '?') hash = (hash * 31 + ch.codePointAt(0)) >>> 0
  return PALETTE[hash % PALETTE.length]
}

const whoOf = (v) => {
  const names = (v.authors || []).map((a) => (a.name ? safeName(a.name) : a.user || 'Anonymous'))
  return names.length ? names.join(', ') : 'Anonymous'
}

/**
 * @param {{docName: string, ytext: any, readOnly: boolean, liveEl: HTMLElement, onClose: () => void}} options
 */
export const setupHistory = ({ docName, ytext, readOnly, liveEl, onClose }) => {
  const button = $('history-button')
  const panel = $('history')
  const slider = $('history-slider')
  const stars = $('history-stars')
  const caption = $('history-caption')
  const list = $('history-list')
  const previewEl = $('preview')
  const compare = $('history-compare')
  const restoreButton = $('history-restore')
  const nameButton = $('history-name')
  const nameNowButton = $('history-name-now')
  const nameForm = $('history-name-form')
  const nameInput = $('history-name-input')

  for (const el of [restoreButton, nameButton, nameNowButton]) el.hidden = readOnly

  /** Versions oldest first; the slider's last position is "Now". */
  let versions = []
  let byId = new Map()
  let selected = null // a version id, or null for "Now"
  let naming = null // the id being named, 'now', or null
  const texts = new Map()

  let preview = null // made on first open: until then the page has one editor only

  const textOf = async (id) => {
    if (texts.has(id)) return texts.get(id)
    const response = await api(apiUrl(docName, `/versions/${id}/text`))
    if (!response.ok) throw new Error(`version ${id}: ${response.status}`)
    const text = await response.text()
    texts.set(id, text)
    return text
  }

  const load = async () => {
    const response = await api(apiUrl(docName, '/versions?limit=1000'))
    const answer = response.ok ? await response.json() : { enabled: true, versions: [] } // 404: not created yet
    if (!answer.enabled) {
      button.hidden = true
      return false
    }
    versions = answer.versions.slice().reverse()
    byId = new Map(versions.map((v) => [v.id, v]))
    render()
    return true
  }

  const indexOf = (id) => (id == null ? versions.length : versions.findIndex((v) => v.id === id))

  const render = () => {
    slider.max = String(versions.length)
    slider.value = String(Math.max(0, indexOf(selected)))
    stars.replaceChildren(...versions.map((v, i) => v.label
      ? h('span', { class: 'star', style: `left: ${versions.length ? (i / versions.length) * 100 : 0}%`, title: v.label }, '\u2605')
      : null).filter(Boolean))
    const groups = new Map()
    for (const v of versions.slice().reverse()) {
      const day = dayOf(new Date(v.created))
      if (!groups.has(day)) groups.set(day, [])
      groups.get(day).push(v)
    }
    const now = h('li', {}, h('button', {
      type: 'button', class: 'version', 'data-id': 'now', 'aria-current': selected == null ? 'true' : 'false', onclick: () => select(null)
    }, h('span', { class: 'version-title' }, 'Current text'), h('span', { class: 'version-meta' }, 'Now, live')))
    list.replaceChildren(h('ul', { class: 'version-group', 'aria-label': 'Now' }, now),
      ...[...groups.entries()].map(([day, items]) => h('section', { class: 'version-day' },
        h('h3', {}, day),
        h('ul', { class: 'version-group', 'aria-label': day }, ...items.map((v) => h('li', {},
          h('button', {
            type: 'button',
            class: `version${v.label ? ' named' : ''}`,
            'data-id': String(v.id),
            'aria-current': selected === v.id ? 'true' : 'false',
            title: new Date(v.created).toLocaleString(),
            onclick: () => select(v.id)
          },
          h('span', { class: 'version-title' }, v.label ? h('span', { 'aria-hidden': 'true' }, '\u2605 ') : null, titleOf(v, byId)),
          h('span', { class: 'version-meta' },
            h('time', { datetime: v.created }, timeOf(new Date(v.created))),
            h('span', { class: 'authors', 'aria-label': `by ${whoOf(v)}` }, ...(v.authors || []).map((a) =>
              h('span', { class: 'avatar small', style: `--user: ${colorOf(a)}`, 'aria-hidden': 'true', title: a.name || a.user || '' }, initials(a.name || a.user || '?')))),
            v.added == null ? null : h('span', { class: 'sizes', 'aria-label': `${v.added} characters added, ${v.removed} removed` },
              h('span', { class: 'added' }, `+${v.added}`), ' ', h('span', { class: 'removed' }, `\u2212${v.removed}`)))))))))
    )
    describe()
  }

  const describe = () => {
    const i = indexOf(selected)
    let text
    if (selected == null) {
      text = `Now: the current text (${versions.length} version${versions.length === 1 ? '' : 's'} before it)`
    } else {
      const v = byId.get(selected)
      text = `Version ${i + 1} of ${versions.length}, ${new Date(v.created).toLocaleString()}, ${titleOf(v, byId)}, by ${whoOf(v)}`
    }
    caption.textContent = text
    slider.value = String(Math.max(0, i))
    slider.setAttribute('aria-valuetext', text)
    restoreButton.disabled = selected == null
    nameButton.disabled = selected == null
    for (const el of list.querySelectorAll('.version')) {
      el.setAttribute('aria-current', String(el.dataset.id === (selected == null ? 'now' : String(selected))))
    }
  }

  let showing = 0 // drops answers to superseded requests while scrubbing
  const show = async () => {
    const ticket = ++showing
    const i = indexOf(selected)
    let doc, original
    try {
      doc = selected == null ? ytext.toString() : await textOf(selected)
      if (compare.value === 'current') {
        original = ytext.toString()
      } else {
        const previous = selected == null ? versions[versions.length - 1] : versions[i - 1]
        original = previous ? await textOf(previous.id) : ''
      }
    } catch (error) {
      if (ticket === showing) toast(`Could not load the version: ${error.message}`)
      return
    }
    if (ticket !== showing) return
    preview = preview || new EditorView({ parent: previewEl })
    preview.setState(EditorState.create({
      doc,
      extensions: [
        lineNumbers(),
        EditorView.lineWrapping,
        markdown(),
        theme,
        EditorState.readOnly.of(true),
        EditorView.editable.of(false),
        EditorView.contentAttributes.of({ 'aria-label': `Preview of ${caption.textContent}` }),
        unifiedMergeView({ original, mergeControls: false, highlightChanges: true, gutter: true, collapseUnchanged: { margin: 3, minSize: 6 } })
      ]
    }))
  }

  const select = (id, { focusList = false } = {}) => {
    selected = id
    describe()
    const hash = id == null ? '' : `#version=${id}`
    window.history.replaceState(null, '', window.location.pathname + window.location.search + hash)
    show()
    if (focusList) list.querySelector('.version[aria-current="true"]')?.focus()
  }

  const open = async (id = null) => {
    panel.hidden = false
    previewEl.hidden = false
    liveEl.hidden = true
    button.setAttribute('aria-expanded', 'true')
    await load()
    select(id != null && byId.has(id) ? id : null)
    slider.focus()
  }

  const close = () => {
    panel.hidden = true
    previewEl.hidden = true
    liveEl.hidden = false
    button.setAttribute('aria-expanded', 'false')
    nameForm.hidden = true
    window.history.replaceState(null, '', window.location.pathname + window.location.search)
    onClose()
  }

  button.addEventListener('click', () => (panel.hidden ? open() : close()))
  $('history-close').addEventListener('click', close)
  panel.addEventListener('keydown', (event) => {
    if (event.key === 'Escape' && !nameForm.contains(event.target)) {
      event.preventDefault()
      close()
      button.focus()
    }
  })
  document.addEventListener('keydown', (event) => {
    if (event.key.toLowerCase() === 'h' && event.altKey && event.shiftKey && (event.ctrlKey || event.metaKey)) {
      event.preventDefault()
      panel.hidden ? open() : close()
    }
  })

  slider.addEventListener('input', () => {
    const i = Number(slider.value)
    select(i >= versions.length ? null : versions[i].id)
  })
  slider.addEventListener('keydown', (event) => {
    if (!event.shiftKey || (event.key !== 'ArrowLeft' && event.key !== 'ArrowRight')) return
    event.preventDefault() // Shift+←/→: jump between named versions
    const i = indexOf(selected)
    const step = event.key === 'ArrowLeft' ? -1 : 1
    for (let j = i + step; j >= 0 && j <= versions.length; j += step) {
      if (j === versions.length || versions[j].label) return select(j === versions.length ? null : versions[j].id)
    }
  })
  compare.addEventListener('change', show)

  restoreButton.addEventListener('click', async () => {
    if (selected == null) return
    const v = byId.get(selected)
    if (!window.confirm(`Restore the version from ${new Date(v.created).toLocaleString()}?\n\nThe current text is kept as a version first. Everyone editing sees the change.`)) return
    const response = await api(apiUrl(docName, `/versions/${selected}/restore`), { method: 'POST' })
    if (!response.ok) {
      toast(`Restore failed: ${await response.text()}`)
      return
    }
    toast(`Restored the version from ${timeOf(new Date(v.created))}. Your previous text is in the history.`)
    close()
  })

  const startNaming = (target) => {
    naming = target
    const v = target === 'now' ? null : byId.get(target)
    nameInput.value = v?.label || ''
    nameForm.hidden = false
    nameInput.focus()
  }
  nameButton.addEventListener('click', () => selected != null && startNaming(selected))
  nameNowButton.addEventListener('click', () => startNaming('now'))
  $('history-name-cancel').addEventListener('click', () => { nameForm.hidden = true })
  nameForm.addEventListener('keydown', (event) => {
    if (event.key === 'Escape') {
      event.preventDefault()
      nameForm.hidden = true
      slider.focus()
    }
  })
  nameForm.addEventListener('submit', async (event) => {
    event.preventDefault()
    const label = nameInput.value.trim()
    const url = naming === 'now' ? apiUrl(docName, '/versions') : apiUrl(docName, `/versions/${naming}`)
    const response = await api(url, {
      method: naming === 'now' ? 'POST' : 'PATCH',
      headers: { 'Content-Type': 'application/json' },
      body: JSON.stringify({ label: label || null })
    })
    if (!response.ok) {
      toast(`Could not name the version: ${await response.text()}`)
      return
    }
    const meta = await response.json()
    nameForm.hidden = true
    toast(label ? `Named “${label}”` : 'Name removed')
    await load()
    select(meta.id)
    slider.focus()
  })

  const currentText = async () => (selected == null ? ytext.toString() : textOf(selected))
  $('history-copy').addEventListener('click', async () => {
    const text = await currentText()
    try {
      await navigator.clipboard.writeText(text)
      toast('Text copied')
    } catch (_) {
      toast('Copying is not allowed here')
    }
  })
  $('history-download').addEventListener('click', async () => {
    const text = await currentText()
    const stem = docName.replace(/[\\/:*?"<>|\p{Cc}]+/gu, '_') || 'document'
    const url = URL.createObjectURL(new Blob([text], { type: 'text/markdown;charset=utf-8' }))
    const link = h('a', { href: url, download: `${stem}${selected == null ? '' : `@${selected}`}.md`, hidden: true })
    document.body.append(link)
    link.click()
    link.remove()
    setTimeout(() => URL.revokeObjectURL(url), 10000)
  })

  // Refresh the list while the panel is open.
  setInterval(() => { if (!panel.hidden) load() }, 20000)

  // The button shows only when the server keeps history; a #version=ID link opens it.
  api(apiUrl(docName, '/versions?limit=1')).then(async (response) => {
    const answer = response.ok ? await response.json() : { enabled: response.status === 404 }
    button.hidden = !answer.enabled
    const match = /^#version=(\d+)$/.exec(window.location.hash)
    if (answer.enabled && match) open(Number(match[1]))
  }).catch(() => {})

  return { open, close, get preview () { return preview }, get versions () { return versions } }
}
