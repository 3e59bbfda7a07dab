/**
 * winston loggers: JSON lines when stdout is not a terminal (for collectors),
 * short coloured lines on a terminal. Never pass key material, ciphertext or
 * frame contents to a logger: fingerprints and channel ids are public, keys are not.
 */
import winston from "winston";

export type Logger = winston.Logger;

export function createLogger(options: { level?: string; json?: boolean } = {}): Logger {
  const json = options.json ?? !process.stdout.isTTY;
  const level = options.level ?? process.env.PSIMBOLS_LOG_LEVEL ?? "info";
  const format = json
    ? winston.format.combine(winston.format.timestamp(), winston.format.json())
    : winston.format.combine(
        winston.format.colorize(),
        winston.format.timestamp({ format: "HH:mm:ss.SSS" }),
        winston.format.printf(({ timestamp, level, message, component, ...meta }) => {
          const rest = Object.keys(meta).length ? " " + JSON.stringify(meta) : "";
          return `${timestamp} ${level} ${component ? `[${component}] ` : ""}${message}${rest}`;
        }),
      );
  const logger = winston.createLogger({ level, format, transports: [new winston.transports.Console({ stderrLevels: ["error", "warn"] })] });
  // winston runs every line through the formats (timestamp, JSON) and its streams before the
  // transport drops one below its level: a line below the level is dropped here, before all
  // that (docs/PERFORMANCE.md: a node's resume logs at info). Children inherit these methods.
  const methods = logger as unknown as Record<string, (...args: unknown[]) => Logger>;
  for (const name of Object.keys(logger.levels)) {
    const write = methods[name]!;
    methods[name] = function (this: Logger | undefined, ...args: unknown[]): Logger {
      const self = this ?? logger;
      return self.isLevelEnabled(name) ? write.apply(self, args) : self;
    };
  }
  return logger;
}
