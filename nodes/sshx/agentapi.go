package sshx

import (
	"context"
	"errors"
	"fmt"
	"time"

	"berth.dev/berth/nodes/agentclient"
	"berth.dev/berth/nodes/api"
)

// ErrVersionMismatch: the agent speaks neither the controller's version
// nor its API version.
var ErrVersionMismatch = errors.New("agent and controller versions disagree")

// agentClient is a client of the agent on socket for one bootstrap or
// uninstall step: one connection at most, closed by the caller's Close,
// so that it keeps no channel of the SSH connection once done.
func agentClient(conn *Conn, socket string) *agentclient.Client {
	return agentclient.New(conn.UnixDialer(socket), agentclient.Options{MaxConns: 1, IdleTimeout: 5 * time.Second})
}

// getAgentVersion asks the agent on socket for its version.
func getAgentVersion(ctx context.Context, conn *Conn, socket string) (agentclient.VersionInfo, error) {
	c := agentClient(conn, socket)
	defer c.Close()
	return c.Version(ctx)
}

// agreeVersion says how an agent's version agrees with the controller's:
// the same version, or, failing that, the same API version (an agent one
// release apart still serves the controller). Anything else is
// ErrVersionMismatch.
func agreeVersion(agent agentclient.VersionInfo, version, apiVersion string) (string, error) {
	switch {
	case agent.Version == version:
		return "same version " + version, nil
	case agent.APIVersion == apiVersion:
		return fmt.Sprintf("same API %s (agent %s, controller %s)", apiVersion, agent.Version, version), nil
	default:
		return "", fmt.Errorf("%w: agent %s speaks API %q, controller %s speaks API %q", ErrVersionMismatch, agent.Version, agent.APIVersion, version, apiVersion)
	}
}

// drainPods asks the agent to run no pods, and waits until it runs none,
// for a purge. It returns how many pods the agent had.
func drainPods(ctx context.Context, conn *Conn, socket string, timeout time.Duration) (int, error) {
	c := agentClient(conn, socket)
	defer c.Close()
	node, err := c.Node(ctx)
	if err != nil {
		return 0, err
	}
	if err := c.SetPods(ctx, api.DesiredPods{Generation: node.Generation + 1, Pods: []api.Pod{}}); err != nil {
		return 0, err
	}
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	for {
		pods, err := c.Pods(ctx)
		if err == nil && len(pods) == 0 {
			return node.Pods, nil
		}
		select {
		case <-ctx.Done():
			if err == nil {
				err = fmt.Errorf("%d pods still there", len(pods))
			}
			return node.Pods, fmt.Errorf("pods not stopped within %v: %w", timeout, err)
		case <-time.After(200 * time.Millisecond):
		}
	}
}
