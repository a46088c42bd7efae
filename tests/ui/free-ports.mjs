// Prints four free loopback ports: admin, OTLP/gRPC, OTLP/HTTP, and one free for both UDP and TCP
// (the X-Ray daemon port: UDP segments, TCP sampling proxy).
import net from 'node:net';
import dgram from 'node:dgram';

const tcp = (port = 0) => new Promise((resolve, reject) => {
  const s = net.createServer().once('error', reject).listen(port, '127.0.0.1', () => resolve(s));
});
const udp = port => new Promise((resolve, reject) => {
  const s = dgram.createSocket('udp4').once('error', reject);
  s.bind(port, '127.0.0.1', () => resolve(s));
});

const held = [];
const ports = [];
for (let i = 0; i < 3; i++) { const s = await tcp(); held.push(s); ports.push(s.address().port); }
for (let tries = 0; ; tries++) {
  const s = await tcp();
  held.push(s);
  const port = s.address().port;
  try { held.push(await udp(port)); ports.push(port); break; } catch (e) { if (tries > 20) throw e; }
}
for (const s of held) s.close();
console.log(ports.join(' '));
