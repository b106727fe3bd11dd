/**
 * Logging: human-readable lines on stderr (stdout carries only the JSON ready line, which tools
 * parse). Levels filter at the call site's cost of one comparison.
 */
export const LogLevels = ['error', 'warn', 'info', 'debug'] as const;
export type LogLevel = (typeof LogLevels)[number];

let threshold = 2; // info

export function setLogLevel(level: LogLevel): void {
  threshold = LogLevels.indexOf(level);
}

function write(level: number, msg: string): void {
  if (level > threshold) return;
  process.stderr.write(`vmnat: ${LogLevels[level]}: ${msg}\n`);
}

export const log = {
  error: (msg: string): void => write(0, msg),
  warn: (msg: string): void => write(1, msg),
  info: (msg: string): void => write(2, msg),
  debug: (msg: string): void => write(3, msg),
  get debugEnabled(): boolean {
    return threshold >= 3;
  },
};
