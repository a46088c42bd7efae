export * from './sidetrace-sidecar.js';
export * from './sidetrace-alarms.js';
