// Package agentclient is the controller's side of the agent API (package
// api): an HTTP client over any connection the caller can dial — the
// agent's unix socket on the same machine, or that socket reached through
// SSH (ssh.Client.Dial("unix", path)). It reuses connections, bounds how
// many it holds, and turns the agent's error kinds back into the sentinel
// errors of package api, so that callers check errors.Is(err,
// api.ErrNotFound).
package agentclient

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"iter"
	"net"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"time"

	"berth.dev/berth/nodes/api"
)

// MaxConns is the most connections a Client holds at once: sshd allows 10
// sessions per connection by default, and the SSH transport keeps some for
// itself.
const MaxConns = 8

// Dialer opens one connection to the agent.
type Dialer func(ctx context.Context) (net.Conn, error)

// DialUnix dials the agent's socket at path on this machine.
func DialUnix(path string) Dialer {
	return func(ctx context.Context) (net.Conn, error) {
		var d net.Dialer
		return d.DialContext(ctx, "unix", path)
	}
}

// Options configure a Client. The zero value works.
type Options struct {
	// MaxConns bounds the connections held at once, idle, busy or carrying
	// an exec session (0 means MaxConns; more is capped at MaxConns).
	// A call that needs one more waits for one to be free.
	MaxConns int
	// IdleTimeout closes a connection idle that long (0: 90s).
	IdleTimeout time.Duration
}

// Client calls one agent. It is safe for concurrent use.
type Client struct {
	http *http.Client
	tr   *http.Transport
	// slots bounds live connections; the transport's own bound does not
	// count those upgraded to exec sessions.
	slots chan struct{}
}

// baseURL's host is a placeholder: every connection comes from the dialer.
const baseURL = "http://agent"

// New returns a client whose connections come from dial.
func New(dial Dialer, opts Options) *Client {
	n := opts.MaxConns
	if n <= 0 || n > MaxConns {
		n = MaxConns
	}
	idle := opts.IdleTimeout
	if idle <= 0 {
		idle = 90 * time.Second
	}
	c := &Client{slots: make(chan struct{}, n)}
	c.tr = &http.Transport{
		DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
			select {
			case c.slots <- struct{}{}:
			case <-ctx.Done():
				return nil, ctx.Err()
			}
			conn, err := dial(ctx)
			if err != nil {
				<-c.slots
				return nil, err
			}
			return &slotConn{Conn: conn, release: func() { <-c.slots }}, nil
		},
		MaxConnsPerHost:     n,
		MaxIdleConnsPerHost: n,
		IdleConnTimeout:     idle,
		DisableCompression:  true, // a local socket or an SSH channel: nothing to gain
		ForceAttemptHTTP2:   false,
	}
	c.http = &http.Client{Transport: c.tr}
	return c
}

// Close closes idle connections; calls in progress go on.
func (c *Client) Close() { c.tr.CloseIdleConnections() }

// slotConn gives its slot back when closed.
type slotConn struct {
	net.Conn
	once    sync.Once
	release func()
}

func (c *slotConn) Close() error {
	err := c.Conn.Close()
	c.once.Do(c.release)
	return err
}

// CloseWrite half-closes the connection where the underlying one can.
func (c *slotConn) CloseWrite() error {
	if cw, ok := c.Conn.(interface{ CloseWrite() error }); ok {
		return cw.CloseWrite()
	}
	return errors.ErrUnsupported
}

// SetPods replaces the agent's desired pod set. It is idempotent, and so
// retried once on a connection that the agent had closed.
func (c *Client) SetPods(ctx context.Context, pods api.DesiredPods) error {
	if err := c.put(ctx, "/v1/pods", pods); err != nil {
		return fmt.Errorf("set pods: %w", err)
	}
	return nil
}

// put sends v as the JSON body of an idempotent PUT (retried once on a
// connection that the agent had closed).
func (c *Client) put(ctx context.Context, path string, v any) error {
	body, err := json.Marshal(v)
	if err != nil {
		return fmt.Errorf("%w: %w", api.ErrInvalid, err)
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodPut, baseURL+path, bytes.NewReader(body))
	if err != nil {
		return err
	}
	req.Header.Set("Content-Type", "application/json")
	// Marks the request as safe to retry, without sending a header.
	req.Header["Idempotency-Key"] = nil
	var res json.RawMessage
	return c.do(req, &res)
}

// SetNetwork sets the machine's Network (PUT /v1/network). It is
// idempotent, and so retried once on a connection that the agent had
// closed. An older generation wraps api.ErrConflict; a Network the agent
// accepted but could not apply in full is an error too (wrapping
// api.ErrInternal or api.ErrUnavailable), and NodeInfo.Network says why.
func (c *Client) SetNetwork(ctx context.Context, n api.Network) error {
	if err := c.put(ctx, "/v1/network", n); err != nil {
		return fmt.Errorf("set network: %w", err)
	}
	return nil
}

// Network returns the last Network the agent was given (the zero Network
// when none was).
func (c *Client) Network(ctx context.Context) (api.Network, error) {
	var n api.Network
	if err := c.get(ctx, "/v1/network", &n); err != nil {
		return api.Network{}, fmt.Errorf("get network: %w", err)
	}
	return n, nil
}

// ImportImages sends an OCI (or docker save) archive to the agent, which
// imports its images: for machines with no registry. The archive is
// streamed as it is read, never held whole in memory, and the call is not
// retried (the stream cannot be replayed). A malformed or oversized
// archive is an error wrapping api.ErrInvalid. The archive is not read
// after the call returns (but for a read already in progress).
func (c *Client) ImportImages(ctx context.Context, archive io.Reader) ([]api.Image, error) {
	// The transport reads the body in a goroutine of its own, may go on
	// after an early answer, and waits for a read in progress even when
	// ctx ends: through a pipe closed when the call ends, the archive is
	// not read afterwards (but for a read in progress) and a stalled
	// archive cannot hold a cancelled call.
	body, pw := io.Pipe()
	defer body.Close()
	go func() {
		_, err := io.Copy(pw, archive)
		pw.CloseWithError(err)
	}()
	defer context.AfterFunc(ctx, func() { body.CloseWithError(context.Cause(ctx)) })()
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, baseURL+"/v1/images/import", body)
	if err != nil {
		return nil, fmt.Errorf("import images: %w", err)
	}
	req.Header.Set("Content-Type", "application/x-tar")
	var res struct {
		Images []api.Image `json:"images"`
	}
	if err := c.do(req, &res); err != nil {
		return nil, fmt.Errorf("import images: %w", err)
	}
	return res.Images, nil
}

// Pods returns the observed status of every pod, sorted by key.
func (c *Client) Pods(ctx context.Context) ([]api.PodStatus, error) {
	var pods []api.PodStatus
	if err := c.get(ctx, "/v1/pods", &pods); err != nil {
		return nil, fmt.Errorf("get pods: %w", err)
	}
	return pods, nil
}

// Node describes the agent's machine.
func (c *Client) Node(ctx context.Context) (api.NodeInfo, error) {
	var info api.NodeInfo
	if err := c.get(ctx, "/v1/node", &info); err != nil {
		return api.NodeInfo{}, fmt.Errorf("get node: %w", err)
	}
	return info, nil
}

// VersionInfo is the agent's version and the API version it speaks.
type VersionInfo struct {
	Version    string `json:"version"`
	APIVersion string `json:"apiVersion"`
}

// Version asks the agent its version.
func (c *Client) Version(ctx context.Context) (VersionInfo, error) {
	var v VersionInfo
	if err := c.get(ctx, "/v1/version", &v); err != nil {
		return VersionInfo{}, fmt.Errorf("get version: %w", err)
	}
	return v, nil
}

// Events returns the events recorded since the given time (all of them
// for the zero time) and, with follow, new ones as they happen, until ctx
// ends. A failure is the last thing yielded: a followed stream that the
// agent ends (it is stopping) yields an error wrapping api.ErrUnavailable,
// so that the caller reconnects. The end of ctx is not a failure: the
// sequence just stops.
func (c *Client) Events(ctx context.Context, since time.Time, follow bool) iter.Seq2[api.Event, error] {
	return func(yield func(api.Event, error) bool) {
		q := url.Values{}
		if !since.IsZero() {
			q.Set("since", since.Format(time.RFC3339Nano))
		}
		if follow {
			q.Set("follow", "true")
		}
		ctx, cancel := context.WithCancel(ctx)
		defer cancel()
		resp, err := c.stream(ctx, "/v1/events", q)
		if err != nil {
			if ctx.Err() == nil {
				yield(api.Event{}, fmt.Errorf("events: %w", err))
			}
			return
		}
		defer resp.Body.Close()
		dec := json.NewDecoder(resp.Body)
		for {
			var ev api.Event
			err := dec.Decode(&ev)
			if ctx.Err() != nil || (err == io.EOF && !follow) {
				return
			}
			if err == io.EOF {
				yield(api.Event{}, fmt.Errorf("events: %w: the agent ended the stream", api.ErrUnavailable))
				return
			}
			if err != nil {
				yield(api.Event{}, fmt.Errorf("events: %w", wireError(err)))
				return
			}
			if !yield(ev, nil) {
				return
			}
		}
	}
}

// Logs writes a container's log to w; with opts.Follow it goes on until
// the container stops or ctx ends (then it returns ctx's error). pod is
// "namespace/name".
func (c *Client) Logs(ctx context.Context, pod string, opts api.LogOptions, w io.Writer) error {
	path, err := podPath(pod, "log")
	if err != nil {
		return fmt.Errorf("logs: %w", err)
	}
	q := url.Values{}
	if opts.Container != "" {
		q.Set("container", opts.Container)
	}
	setBool(q, "follow", opts.Follow)
	setBool(q, "previous", opts.Previous)
	setBool(q, "timestamps", opts.Timestamps)
	if opts.TailLines > 0 {
		q.Set("tailLines", strconv.Itoa(opts.TailLines))
	}
	if !opts.Since.IsZero() {
		q.Set("sinceTime", opts.Since.Format(time.RFC3339Nano))
	}
	resp, err := c.stream(ctx, path, q)
	if err != nil {
		return fmt.Errorf("logs %s: %w", pod, err)
	}
	defer resp.Body.Close()
	if _, err := io.Copy(w, resp.Body); err != nil {
		if ctx.Err() != nil {
			return ctx.Err()
		}
		return fmt.Errorf("logs %s: %w", pod, wireError(err))
	}
	if t := resp.Trailer.Get("Berth-Error"); t != "" {
		return fmt.Errorf("logs %s: %w", pod, decodeError(resp.StatusCode, []byte(t)))
	}
	return nil
}

func setBool(q url.Values, name string, v bool) {
	if v {
		q.Set(name, "true")
	}
}

func podPath(pod, verb string) (string, error) {
	ns, name, ok := strings.Cut(pod, "/")
	if !ok || ns == "" || name == "" || strings.Contains(name, "/") {
		return "", fmt.Errorf("%w: pod %q is not namespace/name", api.ErrInvalid, pod)
	}
	return "/v1/pods/" + url.PathEscape(ns) + "/" + url.PathEscape(name) + "/" + verb, nil
}

func (c *Client) get(ctx context.Context, path string, v any) error {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, baseURL+path, nil)
	if err != nil {
		return err
	}
	return c.do(req, v)
}

// do sends req and decodes a 2xx JSON answer into v.
func (c *Client) do(req *http.Request, v any) error {
	resp, err := c.send(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if err := json.NewDecoder(resp.Body).Decode(v); err != nil {
		return fmt.Errorf("decode the agent's answer: %w", wireError(err))
	}
	return nil
}

// stream sends a GET whose 2xx answer the caller reads.
func (c *Client) stream(ctx context.Context, path string, q url.Values) (*http.Response, error) {
	u := baseURL + path
	if len(q) > 0 {
		u += "?" + q.Encode()
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u, nil)
	if err != nil {
		return nil, err
	}
	return c.send(req)
}

// send sends req; an answer that is not 2xx (or 101) becomes its error.
func (c *Client) send(req *http.Request) (*http.Response, error) {
	resp, err := c.http.Do(req)
	if err != nil {
		if ctxErr := req.Context().Err(); ctxErr != nil {
			return nil, ctxErr
		}
		return nil, fmt.Errorf("%w: %w", api.ErrUnavailable, err)
	}
	if resp.StatusCode/100 == 2 || resp.StatusCode == http.StatusSwitchingProtocols {
		return resp, nil
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(io.LimitReader(resp.Body, 64<<10))
	return nil, decodeError(resp.StatusCode, b)
}

// decodeError turns an error answer back into an error wrapping its
// sentinel; an answer that is not an api.Error (a proxy's, say) is
// classified by its status.
func decodeError(status int, body []byte) error {
	var e api.Error
	if err := json.Unmarshal(body, &e); err == nil && e.Kind != "" {
		return e.Err()
	}
	kind := api.KindInternal
	switch status {
	case http.StatusBadRequest, http.StatusMethodNotAllowed:
		kind = api.KindInvalid
	case http.StatusNotFound:
		kind = api.KindNotFound
	case http.StatusConflict:
		kind = api.KindConflict
	case http.StatusServiceUnavailable, http.StatusBadGateway, http.StatusGatewayTimeout:
		kind = api.KindUnavailable
	}
	msg := strings.TrimSpace(string(body))
	if len(msg) > 200 {
		msg = msg[:200] + "..."
	}
	return api.Error{Kind: kind, Message: fmt.Sprintf("agent answered %d %s: %s", status, http.StatusText(status), msg)}.Err()
}

// wireError marks a failure to read an answer as the agent being
// unavailable (the connection broke mid-answer).
func wireError(err error) error {
	if errors.Is(err, io.ErrUnexpectedEOF) || isNetError(err) {
		return fmt.Errorf("%w: %w", api.ErrUnavailable, err)
	}
	return err
}

func isNetError(err error) bool {
	var ne net.Error
	return errors.As(err, &ne)
}
