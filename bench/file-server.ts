/** A file server for the benches: a process of its own on a free loopback port, serving argv[1] for any path; prints its port. */
export const FILE_SERVER = `
const fs = require('node:fs');
const file = process.argv[1];
const size = fs.statSync(file).size;
const srv = require('node:http').createServer((req, res) => {
  res.writeHead(200, { 'content-length': String(size), 'content-type': 'application/octet-stream' });
  fs.createReadStream(file, { highWaterMark: 1 << 20 }).pipe(res);
});
srv.listen(0, '127.0.0.1', () => console.log(srv.address().port));
`;
