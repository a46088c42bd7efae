import { test } from 'node:test';
import * as assert from 'node:assert/strict';
import * as cdk from 'aws-cdk-lib';
import { Match, Template } from 'aws-cdk-lib/assertions';
import * as ecs from 'aws-cdk-lib/aws-ecs';
import { SidetraceSidecar, SidetraceSidecarProps } from '../lib/index.js';

type Container = Record<string, any>;

function fargate(): { stack: cdk.Stack; td: ecs.FargateTaskDefinition; app: ecs.ContainerDefinition } {
  const stack = new cdk.Stack(new cdk.App(), 'Test');
  const td = new ecs.FargateTaskDefinition(stack, 'Task', { cpu: 512, memoryLimitMiB: 1024 });
  const app = td.addContainer('App', {
    containerName: 'app',
    image: ecs.ContainerImage.fromRegistry('example/app:1'),
    memoryLimitMiB: 512,
  });
  return { stack, td, app };
}

function containers(stack: cdk.Stack): Container[] {
  const tds = Template.fromStack(stack).findResources('AWS::ECS::TaskDefinition');
  const all = Object.values(tds).flatMap((r: any) => r.Properties.ContainerDefinitions);
  return all;
}

function container(stack: cdk.Stack, name: string): Container {
  const found = containers(stack).find((c) => c.Name === name);
  assert.ok(found, `container ${name} not in template`);
  return found;
}

function env(c: Container): Record<string, string> {
  return Object.fromEntries((c.Environment ?? []).map((e: any) => [e.Name, e.Value]));
}

function withSidecar(props: Partial<SidetraceSidecarProps> = {}) {
  const f = fargate();
  const sidecar = new SidetraceSidecar(f.stack, 'Tracing', { taskDefinition: f.td, ...props });
  return { ...f, sidecar };
}

test('sidecar container has the documented runtime settings', () => {
  const { stack } = withSidecar();
  const c = container(stack, 'sidetrace');
  assert.equal(c.Essential, true);
  assert.deepEqual(c.HealthCheck, {
    Command: ['CMD', '/sidetrace', 'healthcheck'], Interval: 5, Timeout: 2, Retries: 3, StartPeriod: 5,
  });
  assert.equal(c.StopTimeout, 30);
  assert.equal(c.User, '65532:65532');
  assert.equal(c.ReadonlyRootFilesystem, true);
  assert.equal(c.Memory, 128);
  assert.equal(c.Image, 'public.ecr.aws/sidetrace/sidetrace:latest');
  assert.deepEqual(env(c), {
    SIDETRACE_MEMORY_LIMIT: '96MiB',
    SIDETRACE_LOG_FORMAT: 'json',
    SIDETRACE_CLOUDWATCH_NAMESPACE: 'Sidetrace',
    SIDETRACE_XRAY_MODE: 'segments',
    SIDETRACE_SPAN_METRICS_SERVICE_VERSION: 'false',
  });
  assert.deepEqual(c.PortMappings, [
    { ContainerPort: 4317, Protocol: 'tcp' },
    { ContainerPort: 4318, Protocol: 'tcp' },
    { ContainerPort: 2000, Protocol: 'udp' },
    { ContainerPort: 2000, Protocol: 'tcp' },
    { ContainerPort: 13133, Protocol: 'tcp' },
  ]);
  assert.equal(c.LogConfiguration.LogDriver, 'awslogs');
  assert.equal(c.LogConfiguration.Options['awslogs-stream-prefix'], 'sidetrace');
  Template.fromStack(stack).hasResourceProperties('AWS::Logs::LogGroup', { RetentionInDays: 30 });
});

test('memory limit env is floor(75%) of the container limit', () => {
  for (const [mib, expected] of [[200, '150MiB'], [255, '191MiB'], [512, '384MiB']] as const) {
    const { stack } = withSidecar({ memoryLimitMiB: mib, cpu: 64 });
    const c = container(stack, 'sidetrace');
    assert.equal(c.Memory, mib);
    assert.equal(c.Cpu, 64);
    assert.equal(env(c).SIDETRACE_MEMORY_LIMIT, expected);
  }
  assert.throws(() => withSidecar({ memoryLimitMiB: 12.5 }), /memoryLimitMiB/);
});

test('default app container waits for HEALTHY and gets the OTLP/X-Ray env', () => {
  const { stack, sidecar } = withSidecar();
  const app = container(stack, 'app');
  assert.deepEqual(app.DependsOn, [{ ContainerName: 'sidetrace', Condition: 'HEALTHY' }]);
  assert.deepEqual(env(app), {
    OTEL_EXPORTER_OTLP_ENDPOINT: 'http://localhost:4318',
    OTEL_EXPORTER_OTLP_PROTOCOL: 'http/protobuf',
    AWS_XRAY_DAEMON_ADDRESS: 'localhost:2000',
  });
  assert.equal(sidecar.otlpEndpoint, 'http://localhost:4318');
  assert.equal(sidecar.otlpGrpcEndpoint, 'http://localhost:4317');
  assert.equal(sidecar.container.containerName, 'sidetrace');
  assert.equal(container(stack, 'sidetrace').DependsOn, undefined);
});

test('sidecar added first never becomes the default container; wire() covers later containers', () => {
  const stack = new cdk.Stack(new cdk.App(), 'Test');
  const td = new ecs.FargateTaskDefinition(stack, 'Task');
  const sidecar = new SidetraceSidecar(stack, 'Tracing', { taskDefinition: td });
  assert.equal(td.defaultContainer, undefined);
  const app = td.addContainer('App', { containerName: 'late', image: ecs.ContainerImage.fromRegistry('x') });
  assert.equal(td.defaultContainer, app);
  sidecar.wire(app);
  sidecar.wire(app); // idempotent
  const late = container(stack, 'late');
  assert.deepEqual(late.DependsOn, [{ ContainerName: 'sidetrace', Condition: 'HEALTHY' }]);
  assert.equal(env(late).OTEL_EXPORTER_OTLP_ENDPOINT, 'http://localhost:4318');
  assert.throws(() => sidecar.wire(sidecar.container), /itself/);
});

test('appContainers wires exactly the given containers', () => {
  const { stack, td } = fargate();
  const worker = td.addContainer('Worker', { containerName: 'worker', image: ecs.ContainerImage.fromRegistry('w') });
  new SidetraceSidecar(stack, 'Tracing', { taskDefinition: td, appContainers: [worker], essential: false });
  assert.equal(container(stack, 'app').DependsOn, undefined);
  assert.deepEqual(container(stack, 'worker').DependsOn, [{ ContainerName: 'sidetrace', Condition: 'HEALTHY' }]);
  assert.equal(container(stack, 'sidetrace').Essential, false);
});

test('wire() rejects a container from another task definition', () => {
  const { stack, sidecar } = withSidecar();
  const other = new ecs.FargateTaskDefinition(stack, 'Other');
  const c = other.addContainer('C', { image: ecs.ContainerImage.fromRegistry('x') });
  assert.throws(() => sidecar.wire(c), /another task definition/);
});

test('task role gets X-Ray and namespace-scoped PutMetricData', () => {
  const { stack } = withSidecar();
  const t = Template.fromStack(stack);
  t.hasResourceProperties('AWS::IAM::Policy', {
    PolicyDocument: {
      Statement: Match.arrayWith([
        {
          Sid: 'SidetraceXRay',
          Effect: 'Allow',
          Action: ['xray:PutTraceSegments', 'xray:GetSamplingRules', 'xray:GetSamplingTargets'],
          Resource: '*',
        },
        {
          Sid: 'SidetraceMetrics',
          Effect: 'Allow',
          Action: 'cloudwatch:PutMetricData',
          Resource: '*',
          Condition: { StringEquals: { 'cloudwatch:namespace': 'Sidetrace' } },
        },
      ]),
    },
    Roles: [{ Ref: Match.stringLikeRegexp('^TaskTaskRole') }],
  });
  assert.ok(!JSON.stringify(t.toJSON()).includes('xray:PutSpans'));
});

test('otlp mode adds xray:PutSpans; custom namespace flows to env and IAM condition', () => {
  const { stack } = withSidecar({ xrayMode: 'otlp', namespace: 'Shop/Tracing', serviceVersionMetrics: true });
  Template.fromStack(stack).hasResourceProperties('AWS::IAM::Policy', {
    PolicyDocument: {
      Statement: Match.arrayWith([
        Match.objectLike({
          Action: ['xray:PutTraceSegments', 'xray:GetSamplingRules', 'xray:GetSamplingTargets', 'xray:PutSpans'],
        }),
        Match.objectLike({ Condition: { StringEquals: { 'cloudwatch:namespace': 'Shop/Tracing' } } }),
      ]),
    },
  });
  const e = env(container(stack, 'sidetrace'));
  assert.equal(e.SIDETRACE_XRAY_MODE, 'otlp');
  assert.equal(e.SIDETRACE_CLOUDWATCH_NAMESPACE, 'Shop/Tracing');
  assert.equal(e.SIDETRACE_SPAN_METRICS_SERVICE_VERSION, 'true');
  assert.throws(() => withSidecar({ xrayMode: 'udp' as any }), /xrayMode/);
});

test('samplingRatio is validated and rendered', () => {
  for (const bad of [-0.1, 1.5, NaN]) {
    assert.throws(() => withSidecar({ samplingRatio: bad }), /samplingRatio must be between 0 and 1/);
  }
  for (const [ok, rendered] of [[0, '0'], [0.25, '0.25'], [1, '1']] as const) {
    const { stack } = withSidecar({ samplingRatio: ok });
    assert.equal(env(container(stack, 'sidetrace')).SIDETRACE_SAMPLING_RATIO, rendered);
  }
});

test('config keys become SIDETRACE_* env twins', () => {
  const { stack } = withSidecar({
    config: { 'batch.max_spans': 512, 'exporters': 'xray', 'span_metrics.enabled': false, 'log_format': 'text' },
  });
  const e = env(container(stack, 'sidetrace'));
  assert.equal(e.SIDETRACE_BATCH_MAX_SPANS, '512');
  assert.equal(e.SIDETRACE_EXPORTERS, 'xray');
  assert.equal(e.SIDETRACE_SPAN_METRICS_ENABLED, 'false');
  assert.equal(e.SIDETRACE_LOG_FORMAT, 'text');
  assert.throws(() => withSidecar({ config: { 'Bad-Key': 1 } }), /must match/);
  assert.throws(() => withSidecar({ config: { 'a b': 1 } }), /must match/);
  assert.throws(() => withSidecar({ config: { 'cloudwatch.namespace': 'X' } }), /use 'namespace'/);
  assert.throws(() => withSidecar({ config: { 'sampling_ratio': 0.5 } }), /use 'samplingRatio'/);
  assert.throws(() => withSidecar({ config: { 'a.b': 1, 'a_b': 2 } }), /both map to SIDETRACE_A_B/);
});

test('custom logging driver replaces the default log group', () => {
  const { stack } = withSidecar({ logging: ecs.LogDrivers.none() });
  assert.equal(container(stack, 'sidetrace').LogConfiguration.LogDriver, 'none');
  Template.fromStack(stack).resourceCountIs('AWS::Logs::LogGroup', 0);
});

test('EC2 task definition: bridge mode uses a link, awsvpc uses localhost', () => {
  const stack = new cdk.Stack(new cdk.App(), 'Test');
  const bridge = new ecs.Ec2TaskDefinition(stack, 'Bridge');
  bridge.addContainer('App', { containerName: 'app', image: ecs.ContainerImage.fromRegistry('x'), memoryLimitMiB: 256 });
  const s1 = new SidetraceSidecar(stack, 'TracingBridge', { taskDefinition: bridge });
  assert.equal(s1.otlpEndpoint, 'http://sidetrace:4318');

  const vpcMode = new ecs.Ec2TaskDefinition(stack, 'AwsVpc', { networkMode: ecs.NetworkMode.AWS_VPC });
  vpcMode.addContainer('App', { containerName: 'app2', image: ecs.ContainerImage.fromRegistry('x'), memoryLimitMiB: 256 });
  new SidetraceSidecar(stack, 'TracingVpc', { taskDefinition: vpcMode });

  const t = Template.fromStack(stack);
  t.hasResourceProperties('AWS::ECS::TaskDefinition', {
    NetworkMode: 'bridge',
    RequiresCompatibilities: ['EC2'],
    ContainerDefinitions: Match.arrayWith([
      Match.objectLike({
        Name: 'app',
        Links: ['sidetrace'],
        DependsOn: [{ ContainerName: 'sidetrace', Condition: 'HEALTHY' }],
        Environment: Match.arrayWith([{ Name: 'AWS_XRAY_DAEMON_ADDRESS', Value: 'sidetrace:2000' }]),
      }),
      Match.objectLike({ Name: 'sidetrace', Memory: 128, StopTimeout: 30, User: '65532:65532' }),
    ]),
  });
  const app2 = container(stack, 'app2');
  assert.equal(app2.Links, undefined);
  assert.equal(env(app2).OTEL_EXPORTER_OTLP_ENDPOINT, 'http://localhost:4318');

  const none = new ecs.Ec2TaskDefinition(stack, 'None', { networkMode: ecs.NetworkMode.NONE });
  assert.throws(() => new SidetraceSidecar(stack, 'TracingNone', { taskDefinition: none }), /network modes/);
});
