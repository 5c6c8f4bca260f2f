// {{name}}: a keyward audit sink plugin written in JavaScript.
//
// The host hands it batches of audit events, one JSON line each (KES's audit
// format), and it writes them to its standard error, which the host logs
// (`stderr: ...` at warn level). Replace `write` with a call to your
// collector or a file in a granted directory.
//
// A batch is either written whole or answered with an error: the host then
// counts its events as dropped (it does not retry), so retry here if your
// collector can fail for a moment.
//
// ComponentizeJS maps the exported interface `audit-lines-api` to the
// exported object `auditLinesApi`; a function that returns normally answers
// `ok`, one that throws `{ tag: 'unavailable', val: '...' }` answers that
// WIT `error` case.

const text = new TextDecoder();

export const auditLinesApi = {
  init(_config) {},

  write(lines) {
    // console.error writes a line to standard error; the batch already ends
    // with a newline.
    console.error(text.decode(lines).replace(/\n$/, ''));
  },
};
