# syntax=docker/dockerfile:1
# A psimbols broker node. Build: docker build -t psimbols .
# Run one node:    docker run -p 9393:9393 psimbols
# Run a cluster:   docker compose up --scale node=3 (docker-compose.yml: Redis, N nodes, HAProxy)
# Arguments after the image name are `psimbols serve` options, e.g.
#   docker run -e PSIMBOLS_WRAP_KEY=... psimbols --redis redis://redis:6379 --node node1

# ---- build: every dependency, TypeScript compiled to dist/ (with the browser bundles)
FROM node:20-bookworm-slim AS build
WORKDIR /app
COPY package.json package-lock.json ./
# the client package is an npm workspace (packages/client): npm ci needs its manifest
COPY packages/client/package.json ./packages/client/
# --ignore-scripts: `prepare` would build before the sources are here.
RUN npm ci --ignore-scripts --no-audit --no-fund --loglevel=error
COPY tsconfig.json tsconfig.base.json tsconfig.browser.json ./
COPY bin ./bin
COPY shared ./shared
COPY client ./client
COPY node ./node
COPY server ./server
COPY cli ./cli
RUN npm run build

# ---- runtime: production dependencies and dist/ only, as a non-root user
FROM node:20-bookworm-slim AS runtime
ENV NODE_ENV=production \
    PSIMBOLS_HOME=/data
WORKDIR /app
COPY package.json package-lock.json ./
COPY packages/client/package.json ./packages/client/
RUN npm ci --omit=dev --ignore-scripts --no-audit --no-fund --loglevel=error \
 && npm cache clean --force \
 && mkdir -p /data /keys \
 && chown node:node /data /keys
COPY --from=build /app/dist/shared ./dist/shared
COPY --from=build /app/dist/client ./dist/client
COPY --from=build /app/dist/node ./dist/node
COPY --from=build /app/dist/server ./dist/server
COPY --from=build /app/dist/cli ./dist/cli
COPY --from=build /app/dist/browser ./dist/browser
COPY bin/psimbols.js ./bin/psimbols.js
RUN chmod 0755 bin/psimbols.js && ln -s /app/bin/psimbols.js /usr/local/bin/psimbols

# The node image's unprivileged user (uid 1000). /data holds a lone node's
# generated server key (mount a volume there to keep it: -v psimbols-data:/data);
# /keys is where the cluster's shared key is mounted (docker-compose.yml).
USER node
EXPOSE 9393
# Liveness only (the process answers HTTP): readiness, which also needs the
# store, is /readyz, checked by the load balancer. No curl in the image: node does it.
HEALTHCHECK --interval=10s --timeout=3s --start-period=15s --retries=3 \
  CMD ["node", "-e", "fetch('http://127.0.0.1:9393/healthz',{signal:AbortSignal.timeout(2500)}).then(r=>process.exit(r.ok?0:1),()=>process.exit(1))"]
ENTRYPOINT ["psimbols", "serve", "--host", "0.0.0.0"]
CMD []
