package agent

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"

	"berth.dev/berth/nodes/api"
)

// archivesLeft lists the archives left in the import directory.
func archivesLeft(t *testing.T, stateDir string) []string {
	t.Helper()
	left, err := filepath.Glob(filepath.Join(stateDir, importDir, "archive-*"))
	if err != nil {
		t.Fatal(err)
	}
	return left
}

func TestImportImagesThenRunWithPullNever(t *testing.T) {
	h := newHarness(t)
	ctx := context.Background()
	var during []string
	h.rt.onImport = func(path string) { during = archivesLeft(t, h.stateDir) }

	imgs, err := h.m.ImportImages(ctx, strings.NewReader(fakeArchive("berth/local:1", "berth/local:2")))
	if err != nil {
		t.Fatal(err)
	}
	want := []api.Image{
		{Ref: "berth/local:1", ID: h.rt.images["berth/local:1"].ID},
		{Ref: "berth/local:2", ID: h.rt.images["berth/local:2"].ID},
	}
	if !slices.Equal(imgs, want) || want[0].ID == "" {
		t.Errorf("imported %+v; want %+v", imgs, want)
	}
	if len(during) != 1 {
		t.Errorf("archives while importing: %v; want the one received", during)
	}
	if left := archivesLeft(t, h.stateDir); len(left) != 0 {
		t.Errorf("archives left after the import: %v", left)
	}
	if ev := h.eventLines(""); !slices.Contains(ev, "Imported : imported berth/local:1, berth/local:2") {
		t.Errorf("events %q; want an Imported event naming both images", ev)
	}

	c := ctr("app")
	c.Image, c.ImagePullPolicy = "berth/local:2", corev1.PullNever
	h.set(1, mkPod("local", c))
	if got := h.dump(); got != "default/local Running ready\n  app running restarts=0 started ready\n" {
		t.Errorf("pod on the imported image:\n%s", got)
	}
	if calls := h.rt.takeCalls(); slices.ContainsFunc(calls, func(c string) bool { return strings.HasPrefix(c, "pull") }) {
		t.Errorf("runtime calls %v: an imported image was pulled", calls)
	}
}

func TestImportImagesRefusesBadArchives(t *testing.T) {
	h := newHarness(t)
	ctx := context.Background()
	p := mkPod("web", ctr("app"))
	h.set(1, p)
	before := h.dump()
	h.rt.takeCalls()

	for _, tc := range []struct {
		name string
		body io.Reader
		want string
	}{
		{"malformed", strings.NewReader("not an archive at all"), "unrecognized image format"},
		{"empty", strings.NewReader(""), "the archive is empty"},
		{"no images", strings.NewReader(fakeArchive()), "no image for this machine"},
		{"broken upload", io.MultiReader(strings.NewReader(fakeArchiveMagic), errReader{io.ErrUnexpectedEOF}), "read the archive after 16 bytes: unexpected EOF"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			imgs, err := h.m.ImportImages(ctx, tc.body)
			if !errors.Is(err, api.ErrInvalid) || !strings.Contains(err.Error(), tc.want) || imgs != nil {
				t.Errorf("ImportImages = %v, %v; want ErrInvalid saying %q", imgs, err, tc.want)
			}
			if err != nil && strings.Contains(err.Error(), h.stateDir) {
				t.Errorf("the error names the temporary file: %v", err)
			}
			if left := archivesLeft(t, h.stateDir); len(left) != 0 {
				t.Errorf("archives left: %v", left)
			}
		})
	}
	h.settle()
	if got := h.dump(); got != before {
		t.Errorf("pods changed:\n%s\nwant:\n%s", got, before)
	}
	if ev := h.eventLines(""); slices.ContainsFunc(ev, func(e string) bool { return strings.HasPrefix(e, "Imported") }) {
		t.Errorf("events %q after failed imports", ev)
	}
}

type errReader struct{ err error }

func (r errReader) Read([]byte) (int, error) { return 0, r.err }

func TestImportImagesSizeLimit(t *testing.T) {
	rt := newFakeRuntime(t, newFakeClock())
	state := t.TempDir()
	archive := fakeArchive("berth/local:1")
	m, err := New(Options{Runtime: rt, StateDir: state, LogDir: t.TempDir(), MaxImportSize: int64(len(archive)),
		Logger: slog.New(slog.NewTextHandler(testWriter{t}, nil))})
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	if _, err := m.ImportImages(ctx, strings.NewReader(archive)); err != nil {
		t.Errorf("an archive of exactly the limit: %v", err)
	}
	rt.takeCalls()
	_, err = m.ImportImages(ctx, strings.NewReader(archive+"x"))
	if !errors.Is(err, api.ErrInvalid) || !strings.Contains(err.Error(), fmt.Sprintf("archive larger than %d bytes", len(archive))) {
		t.Errorf("one byte over the limit: %v", err)
	}
	if calls := rt.takeCalls(); len(calls) != 0 {
		t.Errorf("runtime calls %v for an oversized archive", calls)
	}
	if left := archivesLeft(t, state); len(left) != 0 {
		t.Errorf("archives left: %v", left)
	}

	m2, err := New(Options{Runtime: rt, StateDir: state, LogDir: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	if m2.opts.MaxImportSize != DefaultMaxImportSize || formatBytes(DefaultMaxImportSize) != "8 GiB" {
		t.Errorf("default limit %d (%s)", m2.opts.MaxImportSize, formatBytes(DefaultMaxImportSize))
	}
}

func TestImportImagesRuntimeDown(t *testing.T) {
	h := newHarness(t)
	h.rt.setDown(fmt.Errorf("containerd: %w", api.ErrUnavailable))
	_, err := h.m.ImportImages(context.Background(), strings.NewReader(fakeArchive("berth/local:1")))
	h.rt.setDown(nil)
	if !errors.Is(err, api.ErrUnavailable) || errors.Is(err, api.ErrInvalid) {
		t.Errorf("import with the runtime down: %v; want ErrUnavailable", err)
	}
	if left := archivesLeft(t, h.stateDir); len(left) != 0 {
		t.Errorf("archives left: %v", left)
	}
}

// Imports run one at a time: a second waits for the first, and one that
// gives up waiting leaves nothing behind.
func TestImportImagesOneAtATime(t *testing.T) {
	h := newHarness(t)
	var inside, most atomic.Int32
	release := make(chan struct{})
	entered := make(chan string, 4)
	h.rt.onImport = func(path string) {
		n := inside.Add(1)
		for m := most.Load(); n > m && !most.CompareAndSwap(m, n); m = most.Load() {
		}
		entered <- path
		<-release
		inside.Add(-1)
	}
	done := make(chan error, 2)
	for _, ref := range []string{"berth/a:1", "berth/b:1"} {
		go func() {
			_, err := h.m.ImportImages(context.Background(), strings.NewReader(fakeArchive(ref)))
			done <- err
		}()
	}
	<-entered
	select {
	case p := <-entered:
		t.Fatalf("a second import reached the runtime (%s) while the first was in it", p)
	case <-time.After(100 * time.Millisecond):
	}
	// The one waiting has not even stored its archive.
	if left := archivesLeft(t, h.stateDir); len(left) != 1 {
		t.Errorf("archives while one import waits: %v; want only the running one's", left)
	}

	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel()
	if _, err := h.m.ImportImages(ctx, strings.NewReader(fakeArchive("berth/c:1"))); !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("an import that gives up waiting: %v", err)
	}

	close(release)
	for range 2 {
		if err := <-done; err != nil {
			t.Error(err)
		}
	}
	if most.Load() != 1 {
		t.Errorf("%d imports in the runtime at once", most.Load())
	}
	if _, ok := h.rt.images["berth/c:1"]; ok {
		t.Error("the import that gave up was imported")
	}
	if left := archivesLeft(t, h.stateDir); len(left) != 0 {
		t.Errorf("archives left: %v", left)
	}
}

// An archive left by an agent killed mid-import goes with the next import.
func TestImportImagesRemovesStaleArchives(t *testing.T) {
	h := newHarness(t)
	stale := filepath.Join(h.stateDir, importDir, "archive-123.tar")
	if err := os.MkdirAll(filepath.Dir(stale), 0o700); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(stale, []byte("half"), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := h.m.ImportImages(context.Background(), strings.NewReader(fakeArchive("berth/local:1"))); err != nil {
		t.Fatal(err)
	}
	if fileExists(stale) {
		t.Error("stale archive still there")
	}
}
