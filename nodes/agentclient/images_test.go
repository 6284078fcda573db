package agentclient_test

import (
	"context"
	"errors"
	"fmt"
	"io"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"berth.dev/berth/nodes/agentclient"
	"berth.dev/berth/nodes/api"
)

func TestImportImages(t *testing.T) {
	b := &fakeBackend{}
	c, _ := startAgent(t, b, agentclient.Options{})
	imgs, err := c.ImportImages(context.Background(), strings.NewReader(strings.Repeat("x", 3*1024)))
	if err != nil {
		t.Fatal(err)
	}
	if len(imgs) != 3 || imgs[2].Ref != "berth/img:2" || imgs[2].ID != fmt.Sprintf("sha256:%064d", 2) {
		t.Errorf("imported %+v", imgs)
	}
}

// The archive goes to the agent as it is read: the agent has the first
// part before the second is written.
func TestImportImagesStreams(t *testing.T) {
	first := make(chan struct{})
	b := &fakeBackend{importFn: func(ctx context.Context, r io.Reader) ([]api.Image, error) {
		buf := make([]byte, 1<<20)
		if _, err := io.ReadFull(r, buf); err != nil {
			return nil, err
		}
		close(first)
		n, err := io.Copy(io.Discard, r)
		return []api.Image{{Ref: "all", ID: fmt.Sprint(n + int64(len(buf)))}}, err
	}}
	c, _ := startAgent(t, b, agentclient.Options{})
	pr, pw := io.Pipe()
	go func() {
		chunk := make([]byte, 1<<20)
		pw.Write(chunk)
		select {
		case <-first:
		case <-time.After(10 * time.Second):
			pw.CloseWithError(errors.New("the agent did not get the first MiB before the rest was written"))
			return
		}
		pw.Write(chunk)
		pw.Close()
	}()
	imgs, err := c.ImportImages(context.Background(), pr)
	if err != nil || len(imgs) != 1 || imgs[0].ID != fmt.Sprint(2<<20) {
		t.Fatalf("import of a streamed archive: %+v, %v", imgs, err)
	}
}

// countingReader yields n zero bytes and counts the reads begun after
// the call that was given it returned.
type countingReader struct {
	left     atomic.Int64
	returned atomic.Bool
	late     atomic.Int32
}

func (r *countingReader) Read(p []byte) (int, error) {
	if r.returned.Load() {
		r.late.Add(1)
		return 0, io.EOF
	}
	left := r.left.Load()
	if left == 0 {
		return 0, io.EOF
	}
	n := min(int64(len(p)), left)
	clear(p[:n])
	r.left.Add(-n)
	return int(n), nil
}

// An agent that refuses an archive early (too large) is heard, though
// the client was still sending; and the archive is left alone afterwards.
func TestImportImagesRefusedEarly(t *testing.T) {
	b := &fakeBackend{importFn: func(ctx context.Context, r io.Reader) ([]api.Image, error) {
		if _, err := io.CopyN(io.Discard, r, 1<<20+1); err != nil {
			return nil, err
		}
		return nil, fmt.Errorf("%w: archive larger than 1 MiB", api.ErrInvalid)
	}}
	c, _ := startAgent(t, b, agentclient.Options{})
	var archives []*countingReader
	for range 3 {
		archive := &countingReader{}
		archive.left.Store(256 << 20)
		archives = append(archives, archive)
		_, err := c.ImportImages(context.Background(), archive)
		archive.returned.Store(true)
		if !errors.Is(err, api.ErrInvalid) || !strings.Contains(err.Error(), "archive larger than 1 MiB") {
			t.Errorf("import of an oversized archive: %v; want ErrInvalid from the agent", err)
		}
		if archive.left.Load() == 0 {
			t.Error("the whole archive was sent")
		}
	}
	time.Sleep(50 * time.Millisecond) // late reads would show here
	for i, a := range archives {
		// One read may have begun just before the call returned.
		if n := a.late.Load(); n > 1 {
			t.Errorf("archive %d read %d times after ImportImages returned", i, n)
		}
	}
	// The connection is usable afterwards.
	if _, err := c.Pods(context.Background()); err != nil {
		t.Errorf("pods after a refused import: %v", err)
	}
}

func TestImportImagesCancelled(t *testing.T) {
	started := make(chan struct{})
	b := &fakeBackend{importFn: func(ctx context.Context, r io.Reader) ([]api.Image, error) {
		close(started)
		_, err := io.Copy(io.Discard, r) // ends when the client goes away
		return nil, err
	}}
	c, _ := startAgent(t, b, agentclient.Options{})
	ctx, cancel := context.WithCancel(context.Background())
	pr, pw := io.Pipe()
	defer pw.Close()
	go func() {
		pw.Write([]byte("start"))
		<-started
		cancel()
	}()
	// The archive stalls: the call ends all the same.
	if _, err := c.ImportImages(ctx, pr); !errors.Is(err, context.Canceled) {
		t.Errorf("cancelled import: %v", err)
	}
}
