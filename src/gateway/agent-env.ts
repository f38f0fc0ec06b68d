/**
 * What an agent needs in its environment, in three kinds: fixed values,
 * values built from the gateway's URL (known only inside the sandbox, where
 * the relay picks its port), and copies of the placeholder (which must never
 * be put on a command line).
 *
 * No imports: the relay loads this inside containers, where only the
 * relay's own directory is mounted (no node_modules).
 */
export interface AgentEnvPlan {
  /** The route the agent's API calls use. */
  route: string;
  set: Record<string, string>;
  /** NAME -> path appended to the gateway URL. */
  fromGatewayUrl: Record<string, string>;
  /** Variables that get the placeholder. */
  placeholder: string[];
}

/** The plan's variables, for whoever knows the gateway URL and the placeholder. */
export function resolveAgentEnv(plan: AgentEnvPlan, gatewayUrl: string, placeholder: string): Record<string, string> {
  const env: Record<string, string> = { ...plan.set };
  for (const [name, suffix] of Object.entries(plan.fromGatewayUrl)) env[name] = `${gatewayUrl}${suffix}`;
  for (const name of plan.placeholder) env[name] = placeholder;
  return env;
}
