import { Duration, Token, Tokenization } from 'aws-cdk-lib';
import * as ecs from 'aws-cdk-lib/aws-ecs';
import * as iam from 'aws-cdk-lib/aws-iam';
import * as logs from 'aws-cdk-lib/aws-logs';
import { Construct } from 'constructs';
import { SidetraceAlarms } from './sidetrace-alarms.js';

/**
 * Placeholder image reference. No official image is published at this
 * address yet: pass `image` (pinned by tag or digest) in real deployments.
 */
export const SIDETRACE_DEFAULT_IMAGE = 'public.ecr.aws/sidetrace/sidetrace:latest';

/** Default CloudWatch namespace the agent publishes span metrics to. */
export const SIDETRACE_DEFAULT_NAMESPACE = 'Sidetrace';

/** Name of the sidecar container in the task definition. */
export const SIDETRACE_CONTAINER_NAME = 'sidetrace';

/**
 * How the agent sends traces to X-Ray: `segments` (segment documents via
 * `PutTraceSegments`) or `otlp` (spans via the X-Ray OTLP endpoint, which
 * needs `xray:PutSpans`).
 */
export type XrayMode = 'segments' | 'otlp';

export interface SidetraceSidecarProps {
  /**
   * The task definition to add the sidecar to (Fargate or EC2; network mode
   * awsvpc, host or bridge).
   */
  readonly taskDefinition: ecs.TaskDefinition;

  /**
   * The sidetrace image.
   * @default - `ContainerImage.fromRegistry(SIDETRACE_DEFAULT_IMAGE)`, a placeholder
   */
  readonly image?: ecs.ContainerImage;

  /**
   * Hard memory limit of the sidecar container. The agent is told to stay
   * within floor(75%) of it via `SIDETRACE_MEMORY_LIMIT`.
   * @default 128
   */
  readonly memoryLimitMiB?: number;

  /**
   * CPU units reserved for the sidecar.
   * @default - no reservation
   */
  readonly cpu?: number;

  /**
   * Fraction of traces to keep, between 0 and 1.
   * @default - the agent's default
   */
  readonly samplingRatio?: number;

  /**
   * Add the `Version` dimension (from `service.version`) to span metrics.
   * Required for per-version (canary vs stable) alarms.
   * @default false
   */
  readonly serviceVersionMetrics?: boolean;

  /**
   * CloudWatch namespace for span metrics; also scopes the
   * `cloudwatch:PutMetricData` grant.
   * @default 'Sidetrace'
   */
  readonly namespace?: string;

  /**
   * How traces are sent to X-Ray.
   * @default 'segments'
   */
  readonly xrayMode?: XrayMode;

  /**
   * Whether the task stops when the sidecar stops.
   * @default true
   */
  readonly essential?: boolean;

  /**
   * Extra agent configuration. Each key (`[a-z0-9_.]+`) becomes its env twin,
   * e.g. `{ 'batch.max_spans': 512 }` -> `SIDETRACE_BATCH_MAX_SPANS=512`.
   * Keys that have a dedicated option here are rejected; `memory_limit` and
   * `log_format` may be overridden.
   * @default - none
   */
  readonly config?: Record<string, string | number | boolean>;

  /**
   * Log driver for the sidecar.
   * @default - awslogs to a new log group (one month retention), stream prefix 'sidetrace'
   */
  readonly logging?: ecs.LogDriver;

  /**
   * Containers to wire to the sidecar (dependency on HEALTHY + OTLP/X-Ray env).
   * Use `wire()` for containers added later.
   * @default - the task definition's default container, if it has one
   */
  readonly appContainers?: ecs.ContainerDefinition[];
}

// Config keys that have a dedicated prop: setting them through `config` would
// bypass validation or leave the IAM grant out of step.
const KEYS_WITH_OPTIONS: Record<string, string> = {
  'sampling_ratio': 'samplingRatio',
  'span_metrics.service_version': 'serviceVersionMetrics',
  'cloudwatch.namespace': 'namespace',
  'xray.mode': 'xrayMode',
};

const CONFIG_KEY = /^[a-z0-9_.]+$/;

/** Env var name for an agent config key: `span_metrics.x` -> `SIDETRACE_SPAN_METRICS_X`. */
export function sidetraceEnvName(key: string): string {
  if (!CONFIG_KEY.test(key)) {
    throw new Error(`sidetrace config key '${key}' must match [a-z0-9_.]+`);
  }
  return `SIDETRACE_${key.replace(/\./g, '_').toUpperCase()}`;
}

/**
 * Adds the sidetrace tracing agent to an ECS task definition as a sidecar,
 * grants the task role what the agent needs, and points app containers at it.
 */
export class SidetraceSidecar extends Construct {
  /** The sidecar container. */
  public readonly container: ecs.ContainerDefinition;
  /** OTLP/HTTP endpoint for app containers, e.g. `http://localhost:4318`. */
  public readonly otlpEndpoint: string;
  /** OTLP/gRPC endpoint for app containers, e.g. `http://localhost:4317`. */
  public readonly otlpGrpcEndpoint: string;
  /** Value for `AWS_XRAY_DAEMON_ADDRESS`, e.g. `localhost:2000`. */
  public readonly xrayDaemonAddress: string;
  /** CloudWatch namespace the agent publishes to. */
  public readonly namespace: string;
  /** Whether metrics carry the `Version` dimension. */
  public readonly serviceVersionMetrics: boolean;

  private readonly taskDefinition: ecs.TaskDefinition;
  private readonly wired = new Set<ecs.ContainerDefinition>();
  private readonly alarmSets = new Map<string, SidetraceAlarms>();

  constructor(scope: Construct, id: string, props: SidetraceSidecarProps) {
    super(scope, id);
    const td = props.taskDefinition;
    this.taskDefinition = td;
    this.namespace = props.namespace ?? SIDETRACE_DEFAULT_NAMESPACE;
    this.serviceVersionMetrics = props.serviceVersionMetrics ?? false;
    const xrayMode = props.xrayMode ?? 'segments';
    if (xrayMode !== 'segments' && xrayMode !== 'otlp') {
      throw new Error(`xrayMode must be 'segments' or 'otlp', got '${xrayMode}'`);
    }

    // Containers reach the agent on the task's shared localhost, except in
    // bridge mode, where each container has its own; there we use a link.
    let host: string;
    switch (td.networkMode) {
      case ecs.NetworkMode.AWS_VPC:
      case ecs.NetworkMode.HOST:
        host = 'localhost';
        break;
      case ecs.NetworkMode.BRIDGE:
        host = SIDETRACE_CONTAINER_NAME;
        break;
      default:
        throw new Error(`SidetraceSidecar supports network modes awsvpc, host and bridge, not '${td.networkMode}'`);
    }
    this.otlpEndpoint = `http://${host}:4318`;
    this.otlpGrpcEndpoint = `http://${host}:4317`;
    this.xrayDaemonAddress = `${host}:2000`;

    const memoryLimitMiB = props.memoryLimitMiB ?? 128;
    if (!Number.isInteger(memoryLimitMiB) || memoryLimitMiB < 16) {
      throw new Error(`memoryLimitMiB must be an integer >= 16, got ${memoryLimitMiB}`);
    }
    if (props.samplingRatio !== undefined && !Token.isUnresolved(props.samplingRatio)
      && !(props.samplingRatio >= 0 && props.samplingRatio <= 1)) {
      throw new Error(`samplingRatio must be between 0 and 1, got ${props.samplingRatio}`);
    }

    const environment: Record<string, string> = {
      // Without this the agent does not know its budget and gets OOM-killed.
      SIDETRACE_MEMORY_LIMIT: `${Math.floor(memoryLimitMiB * 0.75)}MiB`,
      SIDETRACE_LOG_FORMAT: 'json',
      SIDETRACE_CLOUDWATCH_NAMESPACE: this.namespace,
      SIDETRACE_XRAY_MODE: xrayMode,
      SIDETRACE_SPAN_METRICS_SERVICE_VERSION: String(this.serviceVersionMetrics),
    };
    if (props.samplingRatio !== undefined) {
      environment.SIDETRACE_SAMPLING_RATIO = Tokenization.stringifyNumber(props.samplingRatio);
    }
    const fromConfig = new Map<string, string>();
    for (const [key, value] of Object.entries(props.config ?? {})) {
      const name = sidetraceEnvName(key);
      if (KEYS_WITH_OPTIONS[key]) {
        throw new Error(`config key '${key}' has a dedicated option: use '${KEYS_WITH_OPTIONS[key]}'`);
      }
      if (fromConfig.has(name)) {
        throw new Error(`config keys '${fromConfig.get(name)}' and '${key}' both map to ${name}`);
      }
      if (typeof value === 'number' && !Token.isUnresolved(value) && !Number.isFinite(value)) {
        throw new Error(`config key '${key}' has a non-finite value`);
      }
      fromConfig.set(name, key);
      environment[name] = typeof value === 'number' ? Tokenization.stringifyNumber(value) : String(value);
    }

    const defaultContainer = td.defaultContainer;
    const essential = props.essential ?? true;
    this.container = new ecs.ContainerDefinition(this, 'Container', {
      taskDefinition: td,
      containerName: SIDETRACE_CONTAINER_NAME,
      image: props.image ?? ecs.ContainerImage.fromRegistry(SIDETRACE_DEFAULT_IMAGE),
      essential,
      memoryLimitMiB,
      cpu: props.cpu,
      user: '65532:65532',
      readonlyRootFilesystem: true,
      // The agent drains for up to 25 s on SIGTERM; leave margin before SIGKILL.
      stopTimeout: Duration.seconds(30),
      // No shell in the image: the binary checks itself.
      healthCheck: {
        command: ['CMD', '/sidetrace', 'healthcheck'],
        interval: Duration.seconds(5),
        timeout: Duration.seconds(2),
        retries: 3,
        startPeriod: Duration.seconds(5),
      },
      environment,
      logging: props.logging ?? ecs.LogDrivers.awsLogs({
        streamPrefix: 'sidetrace',
        logGroup: new logs.LogGroup(this, 'LogGroup', { retention: logs.RetentionDays.ONE_MONTH }),
      }),
      portMappings: [
        { containerPort: 4317, protocol: ecs.Protocol.TCP },
        { containerPort: 4318, protocol: ecs.Protocol.TCP },
        { containerPort: 2000, protocol: ecs.Protocol.UDP },
        { containerPort: 2000, protocol: ecs.Protocol.TCP },
        { containerPort: 13133, protocol: ecs.Protocol.TCP },
      ],
    });
    // The first essential container becomes the task's default container
    // (used for load balancer targets); that must never be the sidecar.
    if (td.defaultContainer === this.container) {
      td.defaultContainer = undefined;
    }

    const xrayActions = ['xray:PutTraceSegments', 'xray:GetSamplingRules', 'xray:GetSamplingTargets'];
    if (xrayMode === 'otlp') {
      xrayActions.push('xray:PutSpans');
    }
    // X-Ray actions do not support resource-level permissions.
    td.taskRole.addToPrincipalPolicy(new iam.PolicyStatement({
      sid: 'SidetraceXRay',
      actions: xrayActions,
      resources: ['*'],
    }));
    td.taskRole.addToPrincipalPolicy(new iam.PolicyStatement({
      sid: 'SidetraceMetrics',
      actions: ['cloudwatch:PutMetricData'],
      resources: ['*'],
      conditions: { StringEquals: { 'cloudwatch:namespace': this.namespace } },
    }));

    const apps = props.appContainers ?? (defaultContainer ? [defaultContainer] : []);
    for (const app of apps) {
      this.wire(app);
    }
  }

  /**
   * Make `container` start after the sidecar is healthy and point its
   * OpenTelemetry and X-Ray SDKs at it. Safe to call more than once.
   */
  public wire(container: ecs.ContainerDefinition): void {
    if (container === this.container) {
      throw new Error('cannot wire the sidetrace container to itself');
    }
    if (container.taskDefinition !== this.taskDefinition) {
      throw new Error(`container '${container.containerName}' belongs to another task definition`);
    }
    if (this.wired.has(container)) {
      return;
    }
    this.wired.add(container);
    container.addContainerDependencies({
      container: this.container,
      condition: ecs.ContainerDependencyCondition.HEALTHY,
    });
    if (this.taskDefinition.networkMode === ecs.NetworkMode.BRIDGE) {
      container.addLink(this.container);
    }
    container.addEnvironment('OTEL_EXPORTER_OTLP_ENDPOINT', this.otlpEndpoint);
    container.addEnvironment('OTEL_EXPORTER_OTLP_PROTOCOL', 'http/protobuf');
    container.addEnvironment('AWS_XRAY_DAEMON_ADDRESS', this.xrayDaemonAddress);
  }

  /**
   * Alarm helpers for this sidecar's metrics (same namespace and Version
   * dimension setting), created under this construct; the same `id` returns
   * the same instance.
   */
  public alarms(id = 'Alarms'): SidetraceAlarms {
    let set = this.alarmSets.get(id);
    if (!set) {
      set = new SidetraceAlarms(this, id, {
        namespace: this.namespace,
        serviceVersionMetrics: this.serviceVersionMetrics,
      });
      this.alarmSets.set(id, set);
    }
    return set;
  }
}
