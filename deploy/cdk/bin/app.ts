// Example: a Fargate service traced by sidetrace, rolled back by ECS when the
// new version's latency or error rate regresses against the stable one.
// Synthesise without the CDK CLI: CDK_OUTDIR=cdk.out node dist/bin/app.js
import * as cdk from 'aws-cdk-lib';
import * as ec2 from 'aws-cdk-lib/aws-ec2';
import * as ecs from 'aws-cdk-lib/aws-ecs';
import { SidetraceSidecar } from '../lib/index.js';

const app = new cdk.App();
// Versions come from the release pipeline, e.g. `-c appVersion=1.4.0 -c stableVersion=1.3.2`.
const appVersion = String(app.node.tryGetContext('appVersion') ?? '1.1.0');
const stableVersion = String(app.node.tryGetContext('stableVersion') ?? '1.0.0');
const serviceName = 'checkout';

// Env-agnostic stack: no AWS account or credentials are needed to synthesise.
const stack = new cdk.Stack(app, 'SidetraceExample', {
  description: 'Example Fargate service traced by the sidetrace sidecar',
});

// Public subnets only, so the example needs no NAT gateway.
const vpc = new ec2.Vpc(stack, 'Vpc', {
  maxAzs: 2,
  natGateways: 0,
  subnetConfiguration: [{ name: 'public', subnetType: ec2.SubnetType.PUBLIC }],
});
const cluster = new ecs.Cluster(stack, 'Cluster', { vpc });

const taskDefinition = new ecs.FargateTaskDefinition(stack, 'Task', { cpu: 512, memoryLimitMiB: 1024 });
taskDefinition.addContainer('App', {
  containerName: 'app',
  // Placeholder app image; any OpenTelemetry- or X-Ray-instrumented app works.
  image: ecs.ContainerImage.fromRegistry('public.ecr.aws/nginx/nginx:stable'),
  memoryLimitMiB: 768,
  portMappings: [{ containerPort: 80 }],
  environment: {
    OTEL_SERVICE_NAME: serviceName,
    OTEL_RESOURCE_ATTRIBUTES: `service.version=${appVersion}`,
  },
  logging: ecs.LogDrivers.awsLogs({ streamPrefix: 'app' }),
});

// Wires the default container ('app'): starts after sidetrace is healthy,
// gets OTEL_EXPORTER_OTLP_ENDPOINT and AWS_XRAY_DAEMON_ADDRESS.
const tracing = new SidetraceSidecar(stack, 'Tracing', {
  taskDefinition,
  samplingRatio: 0.2,
  serviceVersionMetrics: true,
});

const service = new ecs.FargateService(stack, 'Service', {
  cluster,
  taskDefinition,
  desiredCount: 2,
  assignPublicIp: true,
  minHealthyPercent: 100,
  circuitBreaker: { rollback: true },
});

tracing.alarms().enableRollback(service, {
  service: serviceName,
  p99ThresholdMs: 800,
  errorRateThreshold: 0.05,
  canary: { version: appVersion, stableVersion, p99IncreaseMs: 100, errorRateIncrease: 0.02 },
});

// The same sidecar on an EC2 task in bridge mode, where containers do not
// share localhost: the app reaches sidetrace through a container link.
const ec2Stack = new cdk.Stack(app, 'SidetraceExampleEc2', {
  description: 'Example EC2 (bridge mode) task definition with the sidetrace sidecar',
});
const ec2Task = new ecs.Ec2TaskDefinition(ec2Stack, 'Task');
ec2Task.addContainer('App', {
  containerName: 'app',
  image: ecs.ContainerImage.fromRegistry('public.ecr.aws/nginx/nginx:stable'),
  memoryLimitMiB: 256,
  environment: { OTEL_SERVICE_NAME: 'worker' },
});
new SidetraceSidecar(ec2Stack, 'Tracing', { taskDefinition: ec2Task, xrayMode: 'otlp' });

app.synth();
