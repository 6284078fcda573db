package main

import (
	"context"
	"fmt"

	"berth.dev/berth/nodes/logs"
)

// runLogDriver is the hidden mode in which containerd's shim runs berth as
// a container's log driver: `berth __log-driver CONFIG` (logs.DriverCommand),
// with the container's stdout and stderr on descriptors 3 and 4. It copies
// them into the container's CRI log file until they end; SIGTERM (ctx)
// makes it finish within logs.DrainTimeout. It is not a user command: the
// node runtime (nodes/runtime) asks for it through a binary:// log URI.
func runLogDriver(ctx context.Context, e *env, args []string) int {
	if err := logs.RunDriver(ctx, args); err != nil {
		fmt.Fprintf(e.stderr, "berth: %v\n", err)
		return exitError
	}
	return exitOK
}
