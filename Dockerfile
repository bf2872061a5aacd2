# Image for dinie-auth-proxy.
#
#   docker buildx build --platform linux/amd64,linux/arm64 \
#     --build-arg VERSION=0.1.0 --build-arg REVISION="$(git rev-parse HEAD)" \
#     -t ghcr.io/dinie/dinie-auth-proxy:0.1.0 .
#
# REVISION is for --version and dinie_proxy_build_info: the build context
# has no .git, so Go cannot record the revision itself.
#
# The build stage runs on the build machine's own platform and cross-compiles
# for the target one (Go needs no emulator for that), so a multi-arch build is
# as fast as a native one.
FROM --platform=$BUILDPLATFORM golang:1.26 AS build
ARG TARGETOS
ARG TARGETARCH
ARG VERSION=dev
ARG REVISION=
WORKDIR /src
# Modules first, in their own layer: it is reused until go.mod or go.sum change.
COPY go.mod go.sum ./
RUN go mod download
COPY . .
# Static binary (CGO_ENABLED=0) so it runs on distroless/static; -trimpath keeps
# build paths out of it.
RUN CGO_ENABLED=0 GOOS=$TARGETOS GOARCH=$TARGETARCH \
    go build -trimpath -ldflags "-s -w -X main.version=${VERSION} -X main.revision=${REVISION}" \
    -o /out/dinie-auth-proxy .

# No shell, no package manager: only the binary, CA certificates and tzdata.
FROM gcr.io/distroless/static:nonroot
ARG VERSION=dev
LABEL org.opencontainers.image.title="dinie-auth-proxy" \
      org.opencontainers.image.description="Sidecar proxy that injects a Dinie API access token" \
      org.opencontainers.image.version="${VERSION}"
COPY --from=build /out/dinie-auth-proxy /dinie-auth-proxy
# 65532 is distroless's "nonroot"; numeric so Kubernetes' runAsNonRoot can check it.
USER 65532:65532
# 8080: listen.proxy, 9090: listen.admin (both bind 127.0.0.1 by default; see
# deploy/ for the Kubernetes settings).
EXPOSE 8080 9090
ENTRYPOINT ["/dinie-auth-proxy"]
