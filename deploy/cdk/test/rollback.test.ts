import { test } from 'node:test';
import * as assert from 'node:assert/strict';
import * as cdk from 'aws-cdk-lib';
import { Match, Template } from 'aws-cdk-lib/assertions';
import * as cloudwatch from 'aws-cdk-lib/aws-cloudwatch';
import * as codedeploy from 'aws-cdk-lib/aws-codedeploy';
import * as ec2 from 'aws-cdk-lib/aws-ec2';
import * as ecs from 'aws-cdk-lib/aws-ecs';
import * as elbv2 from 'aws-cdk-lib/aws-elasticloadbalancingv2';
import { SidetraceSidecar } from '../lib/index.js';

function setup(serviceVersionMetrics: boolean) {
  const stack = new cdk.Stack(new cdk.App(), 'Test');
  const vpc = new ec2.Vpc(stack, 'Vpc', { maxAzs: 2, natGateways: 0 });
  const cluster = new ecs.Cluster(stack, 'Cluster', { vpc });
  const td = new ecs.FargateTaskDefinition(stack, 'Task');
  td.addContainer('App', { containerName: 'app', image: ecs.ContainerImage.fromRegistry('x'), portMappings: [{ containerPort: 80 }] });
  const tracing = new SidetraceSidecar(stack, 'Tracing', { taskDefinition: td, serviceVersionMetrics });
  return { stack, vpc, cluster, td, tracing };
}

function ref(stack: cdk.Stack, alarm: cloudwatch.Alarm) {
  return { Ref: stack.getLogicalId(alarm.node.defaultChild as cloudwatch.CfnAlarm) };
}

test('enableRollback attaches p99 and error-rate alarms with ROLLBACK_ON_ALARM', () => {
  const { stack, cluster, td, tracing } = setup(false);
  const service = new ecs.FargateService(stack, 'Service', { cluster, taskDefinition: td, minHealthyPercent: 100 });
  const result = tracing.alarms().enableRollback(service, { service: 'checkout', p99ThresholdMs: 500, errorRateThreshold: 0.05 });

  assert.equal(result.alarms.length, 2);
  const t = Template.fromStack(stack);
  t.resourceCountIs('AWS::CloudWatch::Alarm', 2);
  t.hasResourceProperties('AWS::ECS::Service', {
    DeploymentConfiguration: Match.objectLike({
      Alarms: { Enable: true, Rollback: true, AlarmNames: result.alarms.map((a) => ref(stack, a)) },
    }),
  });
  t.hasResourceProperties('AWS::CloudWatch::Alarm', {
    ExtendedStatistic: 'p99', Threshold: 500, Dimensions: [{ Name: 'Service', Value: 'checkout' }],
  });
  t.hasResourceProperties('AWS::CloudWatch::Alarm', {
    Threshold: 0.05,
    Metrics: Match.arrayWith([Match.objectLike({
      Expression: 'IF(requests >= 10, (FILL(errors, 0) + FILL(faults, 0)) / requests, 0)',
    })]),
  });
});

test('canary rollback watches the new version and compares it with the stable one', () => {
  const { stack, cluster, td, tracing } = setup(true);
  const alarms = tracing.alarms();
  // Props form: created before the service, passed as deploymentAlarms.
  const rollback = alarms.rollbackAlarms('Canary', {
    service: 'checkout',
    p99ThresholdMs: 800,
    errorRateThreshold: 0.05,
    canary: { version: '1.1.0', stableVersion: '1.0.0', p99IncreaseMs: 100, errorRateIncrease: 0.02 },
  });
  new ecs.FargateService(stack, 'Service', {
    cluster, taskDefinition: td, minHealthyPercent: 100, deploymentAlarms: rollback.deploymentAlarmConfig,
  });

  assert.equal(rollback.deploymentAlarmConfig.behavior, ecs.AlarmBehavior.ROLLBACK_ON_ALARM);
  const t = Template.fromStack(stack);
  t.resourceCountIs('AWS::CloudWatch::Alarm', 4);
  t.hasResourceProperties('AWS::ECS::Service', {
    DeploymentConfiguration: Match.objectLike({
      Alarms: { Enable: true, Rollback: true, AlarmNames: rollback.alarms.map((a) => ref(stack, a)) },
    }),
  });
  t.hasResourceProperties('AWS::CloudWatch::Alarm', {
    ExtendedStatistic: 'p99',
    Threshold: 800,
    Dimensions: [{ Name: 'Service', Value: 'checkout' }, { Name: 'Version', Value: '1.1.0' }],
  });
  t.hasResourceProperties('AWS::CloudWatch::Alarm', {
    Threshold: 100,
    Metrics: Match.arrayWith([Match.objectLike({ Expression: 'canary_p99 - stable_p99' })]),
  });
  t.hasResourceProperties('AWS::CloudWatch::Alarm', {
    Threshold: 0.02,
    Metrics: Match.arrayWith([Match.objectLike({ Expression: Match.stringLikeRegexp('^IF\\(canary_requests >= 10, .* - IF\\(stable_requests >= 10,') })]),
  });
});

test('canary rollback needs serviceVersionMetrics', () => {
  const { tracing } = setup(false);
  assert.throws(() => tracing.alarms().rollbackAlarms('R', {
    service: 's', p99ThresholdMs: 1, errorRateThreshold: 0.1,
    canary: { version: '2', stableVersion: '1', p99IncreaseMs: 1, errorRateIncrease: 0.1 },
  }), /serviceVersionMetrics/);
});

test('the same alarms drive a CodeDeploy blue/green deployment group', () => {
  const { stack, vpc, cluster, td, tracing } = setup(false);
  const service = new ecs.FargateService(stack, 'Service', {
    cluster, taskDefinition: td, deploymentController: { type: ecs.DeploymentControllerType.CODE_DEPLOY },
  });
  const lb = new elbv2.ApplicationLoadBalancer(stack, 'Lb', { vpc, internetFacing: true });
  const listener = lb.addListener('Http', { port: 80 });
  const targetGroup = (id: string) =>
    new elbv2.ApplicationTargetGroup(stack, id, { vpc, port: 80, targetType: elbv2.TargetType.IP });
  const blue = targetGroup('Blue');
  listener.addTargetGroups('Default', { targetGroups: [blue] });

  const { alarms } = tracing.alarms().rollbackAlarms('BlueGreen', {
    service: 'checkout', p99ThresholdMs: 500, errorRateThreshold: 0.05,
  });
  new codedeploy.EcsDeploymentGroup(stack, 'Deploy', {
    service,
    blueGreenDeploymentConfig: { blueTargetGroup: blue, greenTargetGroup: targetGroup('Green'), listener },
    alarms,
  });

  Template.fromStack(stack).hasResourceProperties('AWS::CodeDeploy::DeploymentGroup', {
    AlarmConfiguration: { Enabled: true, Alarms: alarms.map((a) => ({ Name: ref(stack, a) })) },
    AutoRollbackConfiguration: { Enabled: true, Events: Match.arrayWith(['DEPLOYMENT_STOP_ON_ALARM']) },
  });
});
