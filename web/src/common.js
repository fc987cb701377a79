// Shared by both pages: the base path, the access token, API calls, the local identity, formatting.

/**
 * The server's base path ('' or e.g. '/collab', no trailing slash), which the server
 * writes into <meta name="collab-base">: every URL the pages use starts with it.
 */
export const base = (document.querySelector('meta[name="collab-base"]')?.content || '').replace(/\/+$/, '')

/** The `?token=` of the page URL (with auth on), or null. */
export const token = new URLSearchParams(window.location.search).get('token')

/**
 * The token's claims, read without checking its signature: only to adapt the page
 * (a read-only token gets a read-only editor); the server enforces them.
 */
export const claims = (() => {
  try {
    const payload = token.split('.')[1].replace(/-/g, '+').replace(/_/g, '/')
    const bytes = Uint8Array.from(atob(payload), (c) => c.charCodeAt(0))
    return JSON.parse(new TextDecoder().decode(bytes)) || {}
  } catch (_) {
    return {}
  }
})()

/** `?token=...` to append to a same-site link, or ''. */
export const tokenQuery = token ? `?token=${encodeURIComponent(token)}` : ''

/** The home page URL (with the token, if any). */
export const homeHref = `${base}/${tokenQuery}`

/** The editor page URL of a document (the name is percent-encoded, `/` included). */
export const editorHref = (name, withToken = true) =>
  `${base}/d/${encodeURIComponent(name)}${withToken ? tokenQuery : ''}`

/** The document name of an editor page path (`/collab/d/team%2Fnotes` → `team/notes`). */
export const nameOfPath = (path) => {
  const raw = path.startsWith(`${base}/d/`) ? path.slice(base.length + 3) : path
  try { return decodeURIComponent(raw) } catch (_) { return raw }
}

/** The document list's API URL. */
export const docsUrl = `${base}/api/docs`

/** The API URL of a document, e.g. `apiUrl(name, '/text')`. */
export const apiUrl = (name, suffix = '') => `${docsUrl}/${encodeURIComponent(name)}${suffix}`

/** The sync endpoint, to which a y-websocket provider appends the document name. */
export const syncUrl = () =>
  `${window.location.protocol === 'https:' ? 'wss' : 'ws'}://${window.location.host}${base}/ws`

/**
 * fetch() with the page's token as a bearer token.
 * @param {string} url
 * @param {RequestInit} [init]
 */
export const api = (url, init = {}) => {
  const headers = new Headers(init.headers)
  if (token) headers.set('Authorization', `Bearer ${token}`)
  return fetch(url, { ...init, headers, cache: 'no-store' })
}

/**
 * Keep the pages in this browser (the service worker, <base>/sw.js), so a document
 * opened before opens again with the server down. Needs a secure context
 * (https, or http on localhost / 127.0.0.1); elsewhere the pages just need the server.
 */
export const keepPagesOffline = () => {
  if (!('serviceWorker' in navigator)) return
  navigator.serviceWorker.register(`${base}/sw.js`, { scope: `${base}/` }).catch((err) => {
    console.warn('collab: the pages will not open offline:', err)
  })
}

/**
 * Why a document name is refused (the server's rule), or null when it is fine.
 * @param {string} name
 */
export const nameProblem = (name) => {
  const bytes = new TextEncoder().encode(name).length
  if (bytes === 0) return 'Type a document name.'
  if (bytes > 200) return 'A document name is at most 200 bytes long.'
  if (/\p{Cc}/u.test(name)) return 'A document name cannot contain control characters.'
  return null
}

// ---- identity: a name and a colour, random at first, kept in localStorage ----

export const COLOR_NAMES = {
  '#e5484d': 'Red',
  '#f76b15': 'Orange',
  '#d6a100': 'Yellow',
  '#30a46c': 'Green',
  '#12a594': 'Teal',
  '#0090ff': 'Blue',
  '#3e63dd': 'Indigo',
  '#8e4ec6': 'Purple',
  '#d6409f': 'Pink',
  '#7c6f64': 'Brown'
}
export const PALETTE = Object.keys(COLOR_NAMES)
const ADJECTIVES = ['Brave', 'Calm', 'Clever', 'Curious', 'Eager', 'Gentle', 'Happy', 'Jolly',
  'Keen', 'Lively', 'Lucky', 'Merry', 'Nimble', 'Quiet', 'Swift', 'Witty']
const ANIMALS = ['Badger', 'Crane', 'Dolphin', 'Falcon', 'Fox', 'Hedgehog', 'Heron', 'Koala',
  'Lynx', 'Otter', 'Owl', 'Panda', 'Puffin', 'Raven', 'Seal', 'Wombat']
const pick = (list) => list[Math.floor(Math.random() * list.length)]
const USER_KEY = 'collab.user'

/** `#rrggbb` → the same colour at 20 % opacity, for selections. */
export const lighten = (color) => `${color}33`

/** @returns {{name: string, color: string}} */
export const loadUser = () => {
  try {
    const saved = JSON.parse(localStorage.getItem(USER_KEY) || 'null')
    if (saved && typeof saved.name === 'string' && /^#[0-9a-f]{6}$/i.test(saved.color)) {
      return { name: saved.name.slice(0, 40), color: saved.color.toLowerCase() }
    }
  } catch (_) { /* unreadable storage: make a new identity */ }
  const user = { name: `${pick(ADJECTIVES)} ${pick(ANIMALS)}`, color: pick(PALETTE) }
  saveUser(user)
  return user
}

/** @param {{name: string, color: string}} user */
export const saveUser = (user) => {
  try { localStorage.setItem(USER_KEY, JSON.stringify(user)) } catch (_) { /* private mode */ }
}

/** The first letter of each of the first two words: "Curious Otter" → "CO". */
export const initials = (name) =>
  (name.trim().split(/\s+/).slice(0, 2).map((w) => [...w][0] || '').join('') || '?').toUpperCase()

// ---- formatting ----

export const formatBytes = (n) => {
  if (n < 1024) return `${n} B`
  if (n < 1024 * 1024) return `${(n / 1024).toFixed(n < 10240 ? 1 : 0)} KB`
  return `${(n / 1024 / 1024).toFixed(1)} MB`
}

const relative = new Intl.RelativeTimeFormat(undefined, { numeric: 'auto' })
/** "2 minutes ago", "yesterday", ... */
export const formatAgo = (date, now = Date.now()) => {
  const seconds = Math.round((date.getTime() - now) / 1000)
  const steps = [[60, 'second'], [60, 'minute'], [24, 'hour'], [7, 'day'], [4.35, 'week'],
    [12, 'month'], [Infinity, 'year']]
  let value = seconds
  for (const [size, unit] of steps) {
    if (Math.abs(value) < size) {
      return unit === 'second' && Math.abs(value) < 10 ? 'just now' : relative.format(Math.round(value), unit)
    }
    value /= size
  }
  return date.toLocaleString()
}

/** Show a short message in the page's toast for a few seconds. */
export const toast = (text) => {
  const el = document.getElementById('toast')
  if (!el) return
  el.textContent = text
  el.classList.add('visible')
  clearTimeout(toast.timer)
  toast.timer = setTimeout(() => el.classList.remove('visible'), 2500)
}

/** `document.createElement` with attributes and children. */
export const h = (tag, attrs = {}, ...children) => {
  const el = document.createElement(tag)
  for (const [key, value] of Object.entries(attrs)) {
    if (value === false || value == null) continue
    if (key === 'class') el.className = value
    else if (key.startsWith('on')) el.addEventListener(key.slice(2), value)
    else if (key === 'style') el.style.cssText = value
    else el.setAttribute(key, value === true ? '' : value)
  }
  el.append(...children.flat().filter((c) => c != null && c !== false))
  return el
}
