// Command berth is a GitOps reconciliation engine for bare-metal fleets: it
// reads Kubernetes-style YAML and a machine inventory from git, plans the
// change, applies it through node agents it installs over SSH, and writes
// status back to git. One binary: the controller's commands and the agent.
package main

import (
	"context"
	"os"
	"os/signal"
	"syscall"
)

// version is set at build time (make build) with -ldflags "-X main.version=...".
var version = "dev"

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	code := run(ctx, os.Args[1:], newEnv(os.Stdout, os.Stderr))
	stop()
	os.Exit(code)
}
