# errand: one static binary. `docker compose up` runs `errand migrate` then
# `errand run` (see docker-compose.yml).
FROM golang:1.26 AS build
WORKDIR /src
COPY go.mod go.sum ./
RUN go mod download
COPY . .
RUN CGO_ENABLED=0 go build -trimpath -ldflags="-s -w" -o /out/errand ./cmd/errand

FROM gcr.io/distroless/static-debian12:nonroot
COPY --from=build /out/errand /usr/local/bin/errand
ENV ERRAND_HTTP_ADDR=0.0.0.0:8080
EXPOSE 8080
ENTRYPOINT ["/usr/local/bin/errand"]
CMD ["run"]
