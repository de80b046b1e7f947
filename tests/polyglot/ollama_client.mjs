// The official `ollama` npm client against a running Corral: embed, generate and chat, streamed and not.
// Prints one JSON object with what came back, for the Python test to check.
import { Ollama } from 'ollama';

const [host, model] = process.argv.slice(2);
const client = new Ollama({ host });

const out = {};
out.embed = await client.embed({ model, input: ['hello world', 'the quick brown fox'] });
out.generate = await client.generate({ model, prompt: 'hello', options: { num_predict: 5, seed: 1 } });
let pieces = 0;
for await (const part of await client.generate({ model, prompt: 'hello', stream: true, options: { num_predict: 5 } })) {
  pieces += 1;
  out.generateLast = part;
}
out.generatePieces = pieces;
out.chat = await client.chat({ model, messages: [{ role: 'user', content: 'hi' }], options: { num_predict: 5 } });
pieces = 0;
for await (const part of await client.chat({ model, messages: [{ role: 'user', content: 'hi' }], stream: true,
  options: { num_predict: 5 } })) {
  pieces += 1;
  out.chatLast = part;
}
out.chatPieces = pieces;
out.ps = await client.ps();
try {
  await client.generate({ model: 'no-such-model', prompt: 'x' });
} catch (err) {
  out.missing = { status: err.status_code, error: err.error };
}
console.log(JSON.stringify(out));
