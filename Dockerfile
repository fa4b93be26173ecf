# The forecopy agents (and the workloads) in one image. The same image serves as the `source`
# host (with a workload to migrate) and the `dest` host; see docker-compose.yml.
FROM node:20-bookworm-slim
RUN apt-get update -qq \
 && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends gcc libc6-dev make procps >/dev/null \
 && rm -rf /var/lib/apt/lists/* \
 && npm install -g pnpm@12.4.2 --no-fund --no-audit
WORKDIR /opt/forecopy
COPY package.json pnpm-lock.yaml pnpm-workspace.yaml tsconfig.base.json ./
COPY packages/linux/package.json packages/linux/
COPY packages/protocol/package.json packages/protocol/
COPY packages/filter/package.json packages/filter/
COPY packages/source-agent/package.json packages/source-agent/
COPY packages/dest-agent/package.json packages/dest-agent/
COPY e2e/package.json e2e/
RUN pnpm install --frozen-lockfile
COPY . .
RUN pnpm build
ENV PATH=/opt/forecopy/node_modules/.bin:$PATH
CMD ["forecopy-dest", "--help"]
