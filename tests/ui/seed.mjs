// Waits for the agent, then seeds the fixtures (run.sh calls it before the tests).
import { postTraces, waitReady } from './agent.mjs';
import { seedTraces } from './fixtures.mjs';

await waitReady();
await postTraces(seedTraces());
console.log(`seeded ${Object.keys(seedTraces()).length} traces`);
