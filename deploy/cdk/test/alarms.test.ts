import { test } from 'node:test';
import * as assert from 'node:assert/strict';
import * as cdk from 'aws-cdk-lib';
import { Match, Template } from 'aws-cdk-lib/assertions';
import * as ecs from 'aws-cdk-lib/aws-ecs';
import { SidetraceAlarms, SidetraceSidecar } from '../lib/index.js';

function alarmsStack(serviceVersionMetrics = false) {
  const stack = new cdk.Stack(new cdk.App(), 'Test');
  const alarms = new SidetraceAlarms(stack, 'Alarms', { serviceVersionMetrics });
  return { stack, alarms };
}

function onlyAlarm(stack: cdk.Stack): Record<string, any> {
  const found = Object.values(Template.fromStack(stack).findResources('AWS::CloudWatch::Alarm'));
  assert.equal(found.length, 1);
  return (found[0] as any).Properties;
}

test('service-level p99 uses the [Service] roll-up series', () => {
  const { stack, alarms } = alarmsStack();
  alarms.latencyP99Alarm('P99', { service: 'checkout', thresholdMs: 250 });
  assert.deepEqual(onlyAlarm(stack), {
    AlarmDescription: 'sidetrace: p99 latency of checkout above 250 ms',
    ComparisonOperator: 'GreaterThanThreshold',
    DatapointsToAlarm: 2,
    Dimensions: [{ Name: 'Service', Value: 'checkout' }],
    EvaluationPeriods: 3,
    ExtendedStatistic: 'p99',
    MetricName: 'Latency',
    Namespace: 'Sidetrace',
    Period: 60,
    Threshold: 250,
    TreatMissingData: 'notBreaching',
  });
});

test('p99 per operation and per version pick the matching dimension sets', () => {
  const { stack, alarms } = alarmsStack(true);
  alarms.latencyP99Alarm('Op', { service: 'checkout', operation: 'GET /cart', thresholdMs: 100 });
  alarms.latencyP99Alarm('OpVersion', {
    service: 'checkout', operation: 'GET /cart', version: '2.0.0', thresholdMs: 100,
    period: cdk.Duration.minutes(5), evaluationPeriods: 1, datapointsToAlarm: 5,
  });
  alarms.latencyP99Alarm('Version', { service: 'checkout', version: '2.0.0', thresholdMs: 100 });
  const t = Template.fromStack(stack);
  t.hasResourceProperties('AWS::CloudWatch::Alarm', {
    ExtendedStatistic: 'p99',
    // CDK renders dimensions sorted by name; CloudWatch does not care about order.
    Dimensions: Match.exact([{ Name: 'Operation', Value: 'GET /cart' }, { Name: 'Service', Value: 'checkout' }]),
  });
  t.hasResourceProperties('AWS::CloudWatch::Alarm', {
    Period: 300,
    EvaluationPeriods: 1,
    DatapointsToAlarm: 1, // clamped to evaluationPeriods
    Dimensions: Match.exact([
      { Name: 'Operation', Value: 'GET /cart' },
      { Name: 'Service', Value: 'checkout' },
      { Name: 'Version', Value: '2.0.0' },
    ]),
  });
  t.hasResourceProperties('AWS::CloudWatch::Alarm', {
    Dimensions: Match.exact([{ Name: 'Service', Value: 'checkout' }, { Name: 'Version', Value: '2.0.0' }]),
  });
});

test('Version dimension requires serviceVersionMetrics', () => {
  const { alarms } = alarmsStack(false);
  assert.throws(
    () => alarms.latencyP99Alarm('V', { service: 's', version: '1', thresholdMs: 1 }),
    /serviceVersionMetrics/,
  );
});

test('error rate alarm is (errors+faults)/requests over Sums, quiet periods count as 0', () => {
  const { stack, alarms } = alarmsStack();
  alarms.errorRateAlarm('Errors', { service: 'checkout', operation: 'POST /pay', threshold: 0.05 });
  const p = onlyAlarm(stack);
  assert.equal(p.Threshold, 0.05);
  assert.equal(p.TreatMissingData, 'notBreaching');
  assert.equal(p.ComparisonOperator, 'GreaterThanThreshold');
  assert.equal(p.ExtendedStatistic, undefined);
  const [expr, ...inputs] = p.Metrics;
  assert.equal(expr.Expression, 'IF(requests >= 1, (FILL(errors, 0) + FILL(faults, 0)) / requests, 0)');
  assert.equal(expr.ReturnData, true);
  assert.deepEqual(
    inputs.map((m: any) => [m.Id, m.MetricStat.Metric.MetricName, m.MetricStat.Stat, m.MetricStat.Period, m.ReturnData]),
    [['requests', 'Requests', 'Sum', 60, false], ['errors', 'Errors', 'Sum', 60, false], ['faults', 'Faults', 'Sum', 60, false]],
  );
  for (const m of inputs) {
    assert.deepEqual(m.MetricStat.Metric.Dimensions, [
      { Name: 'Operation', Value: 'POST /pay' }, { Name: 'Service', Value: 'checkout' },
    ]);
    assert.equal(m.MetricStat.Metric.Namespace, 'Sidetrace');
  }
  assert.throws(() => alarms.errorRateAlarm('Bad', { service: 's', threshold: 5 }), /between 0 and 1/);
  assert.throws(() => alarms.errorRateAlarm('Bad2', { service: 's', threshold: 0.1, minRequests: 0 }), /minRequests/);
});

test('fault count alarm sums Faults', () => {
  const { stack, alarms } = alarmsStack();
  alarms.faultCountAlarm('Faults', { service: 'checkout', threshold: 3 });
  const p = onlyAlarm(stack);
  assert.equal(p.MetricName, 'Faults');
  assert.equal(p.Statistic, 'Sum');
  assert.equal(p.Threshold, 3);
  assert.equal(p.ComparisonOperator, 'GreaterThanOrEqualToThreshold');
  assert.deepEqual(p.Dimensions, [{ Name: 'Service', Value: 'checkout' }]);
});

test('canary regression alarms compare two versions', () => {
  const { stack, alarms } = alarmsStack(true);
  alarms.latencyRegressionAlarm('Lat', { service: 'checkout', canaryVersion: '2', stableVersion: '1', thresholdMs: 50 });
  alarms.errorRateRegressionAlarm('Err', {
    service: 'checkout', canaryVersion: '2', stableVersion: '1', threshold: 0.01, minRequests: 20,
  });
  const t = Template.fromStack(stack);
  t.hasResourceProperties('AWS::CloudWatch::Alarm', {
    Threshold: 50,
    Metrics: Match.arrayWith([
      Match.objectLike({ Expression: 'canary_p99 - stable_p99' }),
      Match.objectLike({
        Id: 'canary_p99',
        MetricStat: Match.objectLike({
          Stat: 'p99',
          Metric: Match.objectLike({
            MetricName: 'Latency',
            Dimensions: [{ Name: 'Service', Value: 'checkout' }, { Name: 'Version', Value: '2' }],
          }),
        }),
      }),
      Match.objectLike({
        Id: 'stable_p99',
        MetricStat: Match.objectLike({
          Metric: Match.objectLike({
            Dimensions: [{ Name: 'Service', Value: 'checkout' }, { Name: 'Version', Value: '1' }],
          }),
        }),
      }),
    ]),
  });
  t.hasResourceProperties('AWS::CloudWatch::Alarm', {
    Threshold: 0.01,
    Metrics: Match.arrayWith([Match.objectLike({
      Expression: 'IF(canary_requests >= 20, (FILL(canary_errors, 0) + FILL(canary_faults, 0)) / canary_requests, 0)'
        + ' - IF(stable_requests >= 20, (FILL(stable_errors, 0) + FILL(stable_faults, 0)) / stable_requests, 0)',
    })]),
  });
  assert.throws(
    () => alarms.latencyRegressionAlarm('Same', { service: 's', canaryVersion: '1', stableVersion: '1', thresholdMs: 1 }),
    /both '1'/,
  );
});

test('sidecar.alarms() uses the sidecar namespace', () => {
  const stack = new cdk.Stack(new cdk.App(), 'Test');
  const td = new ecs.FargateTaskDefinition(stack, 'Task');
  const tracing = new SidetraceSidecar(stack, 'Tracing', { taskDefinition: td, namespace: 'Shop', serviceVersionMetrics: true });
  const alarms = tracing.alarms();
  assert.equal(tracing.alarms(), alarms);
  assert.equal(alarms.namespace, 'Shop');
  alarms.latencyP99Alarm('P99', { service: 'cart', version: '3', thresholdMs: 10 });
  const p = onlyAlarm(stack);
  assert.equal(p.Namespace, 'Shop');
  assert.deepEqual(p.Dimensions, [{ Name: 'Service', Value: 'cart' }, { Name: 'Version', Value: '3' }]);
});
