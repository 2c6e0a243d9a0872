# dvcr-importer: worker and API in one image (`dvcr-importer worker` / `dvcr-importer serve`).
FROM node:20-bookworm-slim
RUN apt-get update \
 && apt-get install -y --no-install-recommends qemu-utils xz-utils zstd bzip2 ca-certificates util-linux \
 && rm -rf /var/lib/apt/lists/*
WORKDIR /app
COPY package.json package-lock.json ./
RUN npm ci --omit=dev --no-audit --no-fund
COPY bin ./bin
COPY src ./src
COPY queues ./queues
COPY workers ./workers
# Worker processes bundle the import thread's code into this cache at start (workers/thread-entry.ts).
RUN mkdir -p node_modules/.cache/dvcr-importer && chown node node_modules/.cache/dvcr-importer
USER node
ENV NODE_ENV=production
ENTRYPOINT ["node", "bin/dvcr-importer.js"]
CMD ["worker"]
