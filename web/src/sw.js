// The service worker: the pages and their bundle stay in this browser, so a
// document that was open before can be reopened (and edited) with the server
// down. Served by the server at <base>/sw.js, scope <base>/; build.mjs writes the
// build's hashed asset URLs into ASSETS (so each build is a new worker).
//
// - Pages (<base>/ and <base>/d/<name>): network first, the copy in the cache when
//   the server does not answer within PAGE_TIMEOUT_MS (or a proxy answers 502-504).
//   Every /d/<name> is the same HTML, so one copy serves every document.
// - <base>/static/*: content-hashed, so cache first.
// - Everything else (API, sync socket, health) is never touched.
/* eslint-env serviceworker */

const ASSETS = [] // replaced by build.mjs: ["static/editor.js?v=…", …]
const VERSION = 'dev' // replaced by build.mjs: a hash of ASSETS
const CACHE = `collab-${VERSION}`
const SCOPE = new URL(self.registration.scope)
const HOME = SCOPE.href
const EDITOR = new URL('d/', SCOPE).href // the cache key of every editor page
const PAGE_TIMEOUT_MS = 4000

const refresh = async (cache, url, key) => {
  const response = await fetch(url, { cache: 'no-cache' })
  if (response.ok) await cache.put(key, response)
}

self.addEventListener('install', (event) => {
  event.waitUntil((async () => {
    const cache = await caches.open(CACHE)
    await Promise.all([
      refresh(cache, HOME, HOME),
      refresh(cache, new URL('d/_', SCOPE).href, EDITOR),
      cache.addAll(ASSETS.map((asset) => new URL(asset, SCOPE).href))
    ])
    await self.skipWaiting()
  })())
})

self.addEventListener('activate', (event) => {
  event.waitUntil((async () => {
    for (const name of await caches.keys()) {
      if (name.startsWith('collab-') && name !== CACHE) await caches.delete(name)
    }
    await self.clients.claim()
  })())
})

const timeout = (ms) => new Promise((resolve, reject) => setTimeout(() => reject(new Error('timeout')), ms))

const page = async (request, key) => {
  const cache = await caches.open(CACHE)
  try {
    const response = await Promise.race([fetch(request), timeout(PAGE_TIMEOUT_MS)])
    if (response.ok) await cache.put(key, response.clone())
    if (response.status < 502 || response.status > 504) return response
    return (await cache.match(key)) || response // a proxy in front of a server that is down
  } catch (err) {
    const cached = await cache.match(key)
    if (cached) return cached
    throw err
  }
}

const asset = async (request) => {
  const cache = await caches.open(CACHE)
  const cached = await cache.match(request)
  if (cached) return cached
  const response = await fetch(request)
  if (response.ok) await cache.put(request, response.clone())
  return response
}

self.addEventListener('fetch', (event) => {
  const request = event.request
  const url = new URL(request.url)
  if (request.method !== 'GET' || url.origin !== SCOPE.origin || !url.pathname.startsWith(SCOPE.pathname)) return
  const rest = url.pathname.slice(SCOPE.pathname.length)
  if (request.mode === 'navigate' && (rest === '' || rest.startsWith('d/'))) {
    event.respondWith(page(request, rest === '' ? HOME : EDITOR))
  } else if (rest.startsWith('static/')) {
    event.respondWith(asset(request))
  }
})
