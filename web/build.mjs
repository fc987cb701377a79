// Bundles the editor pages into ../collab/static/ (served by the Python server).
//
//   npm run build            one minified build
//   npm run build -- --dev   unminified, with inline source maps
//
// The HTML pages reference their script and stylesheet as __COLLAB_BASE__/static/NAME?v=HASH
// (the server puts its base path in place of __COLLAB_BASE__),
// so Tornado's static handler may cache them forever and a rebuild still shows.
import { createHash } from 'node:crypto'
import { copyFileSync, mkdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs'
import { dirname, join } from 'node:path'
import { fileURLToPath } from 'node:url'
import * as esbuild from 'esbuild'

const here = dirname(fileURLToPath(import.meta.url))
const out = join(here, '..', 'collab', 'static')
const dev = process.argv.includes('--dev')

rmSync(out, { recursive: true, force: true })
mkdirSync(out, { recursive: true })

await esbuild.build({
  entryPoints: { home: join(here, 'src', 'home.js'), editor: join(here, 'src', 'editor.js') },
  outdir: out,
  bundle: true,
  format: 'esm',
  target: ['es2020'],
  minify: !dev,
  sourcemap: dev ? 'inline' : false,
  legalComments: 'none',
  logLevel: 'warning'
})
copyFileSync(join(here, 'style.css'), join(out, 'style.css'))

const hash = (file) =>
  createHash('sha256').update(readFileSync(join(out, file))).digest('hex').slice(0, 12)
const versions = Object.fromEntries(
  ['home.js', 'editor.js', 'style.css'].map((file) => [file, hash(file)])
)
for (const page of ['index.html', 'editor.html']) {
  const html = readFileSync(join(here, page), 'utf8').replace(
    /\/static\/([\w.-]+)\?v=HASH/g,
    (_, file) => `/static/${file}?v=${versions[file]}`
  )
  writeFileSync(join(out, page), html)
}
// The service worker, with this build's asset URLs (relative to its scope, <base>/).
const assets = Object.entries(versions).map(([file, v]) => `static/${file}?v=${v}`)
const version = createHash('sha256').update(assets.join('\n')).digest('hex').slice(0, 12)
const worker = readFileSync(join(here, 'src', 'sw.js'), 'utf8')
  .replace(/^const ASSETS = \[\].*$/m, `const ASSETS = ${JSON.stringify(assets)}`)
  .replace(/^const VERSION = 'dev'.*$/m, `const VERSION = '${version}'`)
if (!worker.includes(version)) throw new Error('sw.js: ASSETS/VERSION placeholders not found')
writeFileSync(join(out, 'sw.js'), worker)
console.log(`built ${Object.keys(versions).join(', ')}, 2 pages and sw.js into ${out}`)
