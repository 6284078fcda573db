package sshx

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"time"

	"berth.dev/berth/nodes/api"
)

// The few agent calls bootstrap and uninstall make themselves, over
// DialUnix. The controller's client for the whole API is agentclient.

// maxAgentAnswer bounds what is read of an answer here.
const maxAgentAnswer = 1 << 20

// ErrVersionMismatch: the agent speaks neither the controller's version
// nor its API version.
var ErrVersionMismatch = errors.New("agent and controller versions disagree")

// AgentVersion is the agent's answer to GET /v1/version.
type AgentVersion struct {
	Version    string `json:"version"`
	APIVersion string `json:"apiVersion"`
}

// agentHTTP is an HTTP client whose every request opens its own
// forwarded connection to socket and closes it after, so that it holds no
// channel between calls.
func agentHTTP(conn *Conn, socket string) *http.Client {
	return &http.Client{Transport: &http.Transport{
		DialContext:       func(ctx context.Context, _, _ string) (net.Conn, error) { return conn.DialUnix(ctx, socket) },
		DisableKeepAlives: true,
	}}
}

// agentCall sends one request to the agent and decodes its JSON answer
// into out (when not nil).
func agentCall(ctx context.Context, hc *http.Client, method, path string, in, out any) error {
	var body io.Reader
	if in != nil {
		b, err := json.Marshal(in)
		if err != nil {
			return err
		}
		body = bytes.NewReader(b)
	}
	req, err := http.NewRequestWithContext(ctx, method, "http://berth-agent"+path, body)
	if err != nil {
		return err
	}
	if in != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	resp, err := hc.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(io.LimitReader(resp.Body, maxAgentAnswer))
	if err != nil {
		return fmt.Errorf("%s %s: %w", method, path, err)
	}
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("%s %s: %s: %s", method, path, resp.Status, truncate(string(bytes.TrimSpace(b)), 300))
	}
	if out != nil {
		if err := json.Unmarshal(b, out); err != nil {
			return fmt.Errorf("%s %s: %w", method, path, err)
		}
	}
	return nil
}

// getAgentVersion asks the agent on socket for its version.
func getAgentVersion(ctx context.Context, conn *Conn, socket string) (AgentVersion, error) {
	var v AgentVersion
	err := agentCall(ctx, agentHTTP(conn, socket), http.MethodGet, "/v1/version", nil, &v)
	return v, err
}

// agreeVersion says how an agent's version agrees with the controller's:
// the same version, or, failing that, the same API version (an agent one
// release apart still serves the controller). Anything else is
// ErrVersionMismatch.
func agreeVersion(agent AgentVersion, version, apiVersion string) (string, error) {
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
// for a purge.
func drainPods(ctx context.Context, conn *Conn, socket string, timeout time.Duration) (int, error) {
	hc := agentHTTP(conn, socket)
	var node api.NodeInfo
	if err := agentCall(ctx, hc, http.MethodGet, "/v1/node", nil, &node); err != nil {
		return 0, err
	}
	desired := api.DesiredPods{Generation: node.Generation + 1, Pods: []api.Pod{}}
	if err := agentCall(ctx, hc, http.MethodPut, "/v1/pods", desired, nil); err != nil {
		return 0, err
	}
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	for {
		var pods []api.PodStatus
		err := agentCall(ctx, hc, http.MethodGet, "/v1/pods", nil, &pods)
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
