package lab

import (
	"context"
	"fmt"
	"net"
	"path/filepath"
	"time"

	"github.com/containerd/containerd/v2/client"
)

// ContainerdBinary is Debian's containerd (1.6).
var ContainerdBinary = "containerd"

// containerdConfigTemplate is a machine's containerd configuration: its own
// root, state and socket, no CRI plugin (the agent drives containerd
// through its API, and CRI would bring its own CNI and iptables), no
// debug or metrics listeners, and the "opt" plugin kept under its root
// instead of /opt/containerd.
const containerdConfigTemplate = `# containerd of lab machine %s, written by berth lab up.
version = 2
root = %q
state = %q
disabled_plugins = [
  "io.containerd.grpc.v1.cri",
  "io.containerd.snapshotter.v1.aufs",
  "io.containerd.snapshotter.v1.btrfs",
  "io.containerd.snapshotter.v1.devmapper",
  "io.containerd.snapshotter.v1.zfs",
]

[grpc]
  address = %q

[debug]
  address = ""
  level = "info"

[metrics]
  address = ""

[plugins."io.containerd.internal.v1.opt"]
  path = %q
`

func containerdConfig(m Machine) string {
	c := m.Containerd
	return fmt.Sprintf(containerdConfigTemplate, m.Name, c.Root, c.State, c.Address, filepath.Join(c.Root, "opt"))
}

// containerdVersion asks the containerd at address for its version.
func containerdVersion(ctx context.Context, address string) (string, error) {
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	// Fail fast when nothing listens: the client's dial would retry.
	var d net.Dialer
	conn, err := d.DialContext(ctx, "unix", address)
	if err != nil {
		return "", err
	}
	conn.Close()
	c, err := client.New(address, client.WithTimeout(2*time.Second))
	if err != nil {
		return "", err
	}
	defer c.Close()
	v, err := c.Version(ctx)
	if err != nil {
		return "", err
	}
	return v.Version, nil
}

// waitContainerd waits until the containerd at address answers, d exits,
// or ctx ends.
func waitContainerd(ctx context.Context, address string, d *daemon) error {
	for {
		_, err := containerdVersion(ctx, address)
		if err == nil {
			return nil
		}
		select {
		case <-d.done:
			return d.failure()
		case <-ctx.Done():
			return fmt.Errorf("containerd at %s not answering: %w (last: %v)", address, ctx.Err(), err)
		case <-time.After(20 * time.Millisecond):
		}
	}
}
