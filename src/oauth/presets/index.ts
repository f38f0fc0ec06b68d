import type { ProviderConfig } from '../../config.js';
import { anthropic } from './anthropic.js';
import { codex } from './codex.js';
import { gemini } from './gemini.js';
import { github } from './github.js';
import { qwen } from './qwen.js';

/** SPEC §7 built-in providers, by name. A config entry of the same name is merged over one field by field (config.ts). */
export const BUILTIN_PRESETS: Readonly<Record<string, ProviderConfig>> = Object.freeze({ anthropic, gemini, qwen, codex, github });
