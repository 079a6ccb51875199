// What the Node.js peers of the interop tests (node-peer.mjs, uc-peer.mjs)
// share. Each imports it first: modules are evaluated in the order they
// are imported, so what it provides is there before js-libp2p loads.

// js-libp2p 3 uses Promise.withResolvers (Node.js 22); Debian's Node.js is
// 20.
Promise.withResolvers ??= function () {
  let resolve, reject
  const promise = new Promise((yes, no) => { resolve = yes; reject = no })
  return { promise, resolve, reject }
}

/** Writes one JSON object as a line on stdout. */
export const emit = event => process.stdout.write(JSON.stringify(event) + '\n')

/** An `error` line for a command that failed. */
export const fail = err => emit({ type: 'error', error: err.message })

/**
 * The command line's `--key value` pairs over `defaults` (a key whose
 * default is an array collects every value given). An unknown or
 * incomplete option is one line on stderr and exit status 2.
 */
export function parseArgs (name, defaults) {
  const args = structuredClone(defaults)
  for (let i = 2; i < process.argv.length; i += 2) {
    const key = process.argv[i].replace(/^--/, '')
    const value = process.argv[i + 1]
    if (!(key in args) || value === undefined) {
      console.error(`${name}: unknown or incomplete option ${process.argv[i]}`)
      process.exit(2)
    }
    if (Array.isArray(args[key])) args[key].push(value)
    else args[key] = value
  }
  return args
}
