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
  return winston.createLogger({ level, format, transports: [new winston.transports.Console({ stderrLevels: ["error", "warn"] })] });
}
