// Calls Version, List and Show on a running Corral over gRPC, loading protos/ as a user in another
// language would, and prints the three replies as one JSON object for the Python test to check.
const path = require('path');
const grpc = require('@grpc/grpc-js');
const protoLoader = require('@grpc/proto-loader');

const [target, model] = process.argv.slice(2);
const root = path.resolve(__dirname, '..', '..');
const definition = protoLoader.loadSync(path.join(root, 'protos/ollama/v1/ollama.proto'), {
  includeDirs: [root, path.join(root, 'protos/third_party')],
  keepCase: true, longs: Number, defaults: true, oneofs: true,
});
const { Ollama } = grpc.loadPackageDefinition(definition).ollama.v1;
const client = new Ollama(target, grpc.credentials.createInsecure());
const call = (method, request) => new Promise((resolve, reject) =>
  client[method](request, { deadline: Date.now() + 10000 }, (err, reply) => (err ? reject(err) : resolve(reply))));

(async () => {
  const out = {};
  out.version = await call('Version', {});
  out.list = await call('List', {});
  out.show = await call('Show', { model });
  try {
    await call('Show', { model: 'no-such-model' });
  } catch (err) {
    out.missing = { code: err.code, details: err.details };
  }
  console.log(JSON.stringify(out));
  client.close();
})().catch((err) => { console.error(err); process.exit(1); });
