package logs

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"berth.dev/berth/internal/syncbuf"
	"berth.dev/berth/nodes/api"
)

// writeLog writes lines "<stream> <tag> <content>" as CRI entries one
// second apart from t0, into a file rotated at maxSize.
func writeLog(t *testing.T, path string, maxSize int64, lines ...string) {
	t.Helper()
	lf, err := OpenFile(path, maxSize, 10)
	if err != nil {
		t.Fatal(err)
	}
	defer lf.Close()
	clock := fakeClock()
	for _, l := range lines {
		f := strings.SplitN(l, " ", 3)
		if err := lf.Write(Entry{clock(), Stream(f[0]), Tag(f[1]), []byte(f[2])}); err != nil {
			t.Fatal(err)
		}
	}
}

func TestRead(t *testing.T) {
	path := filepath.Join(t.TempDir(), "0.log")
	// Rotated every two lines or so, so that reading crosses files.
	writeLog(t, path, 120,
		"stdout F one",
		"stderr F two",
		"stdout P thr",
		"stderr F four",
		"stdout P e",
		"stdout F e",
		"stdout F five",
	)
	if files, _ := Files(path); len(files) < 3 {
		t.Fatalf("want the log spread over several files, got %v", files)
	}
	for _, c := range []struct {
		name string
		opts api.LogOptions
		want string
	}{
		{"all", api.LogOptions{}, "one\ntwo\nfour\nthree\nfive\n"},
		{"tail 2", api.LogOptions{TailLines: 2}, "three\nfive\n"},
		{"tail more than there is", api.LogOptions{TailLines: 100}, "one\ntwo\nfour\nthree\nfive\n"},
		{"since", api.LogOptions{Since: t0.Add(2 * time.Second)}, "four\nthree\nfive\n"},
		{"since and tail", api.LogOptions{Since: t0.Add(time.Second), TailLines: 3}, "four\nthree\nfive\n"},
		{"timestamps", api.LogOptions{TailLines: 2, Timestamps: true},
			"2024-05-06T07:08:11.123456789Z three\n2024-05-06T07:08:15.123456789Z five\n"},
	} {
		t.Run(c.name, func(t *testing.T) {
			var out bytes.Buffer
			if err := Read(context.Background(), path, c.opts, &out); err != nil {
				t.Fatal(err)
			}
			if out.String() != c.want {
				t.Errorf("got %q, want %q", out.String(), c.want)
			}
		})
	}
}

func TestReadMissing(t *testing.T) {
	err := Read(context.Background(), filepath.Join(t.TempDir(), "0.log"), api.LogOptions{}, io.Discard)
	if !errors.Is(err, os.ErrNotExist) {
		t.Errorf("Read of a missing log = %v, want ErrNotExist", err)
	}
}

func TestReadSkipsMalformedAndIncompleteLines(t *testing.T) {
	path := filepath.Join(t.TempDir(), "0.log")
	data := "garbage\n" +
		"2024-05-06T07:08:09Z stdout F ok\n" +
		"2024-05-06T07:08:10Z stdout F half-writ" // no newline: still being written
	os.WriteFile(path, []byte(data), 0o644)
	var out bytes.Buffer
	if err := Read(context.Background(), path, api.LogOptions{}, &out); err != nil {
		t.Fatal(err)
	}
	if out.String() != "ok\n" {
		t.Errorf("got %q", out.String())
	}
}

func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func TestFollowAcrossRotations(t *testing.T) {
	for _, poll := range []bool{false, true} {
		t.Run(fmt.Sprintf("poll only %v", poll), func(t *testing.T) {
			path := filepath.Join(t.TempDir(), "0.log")
			lf, err := OpenFile(path, 200, 20)
			if err != nil {
				t.Fatal(err)
			}
			defer lf.Close()
			lf.Write(Entry{t0, Stdout, Full, []byte("before-1")})
			lf.Write(Entry{t0, Stdout, Full, []byte("before-2")})

			var out syncbuf.Buffer
			var stopped atomic.Bool
			opts := []ReadOption{Until(stopped.Load)}
			if poll {
				// Only the poll: a long interval would show as a timeout.
				opts = append(opts, PollInterval(20*time.Millisecond))
			}
			done := make(chan error, 1)
			go func() {
				done <- Read(context.Background(), path, api.LogOptions{Follow: true, TailLines: 1}, &out, opts...)
			}()
			waitFor(t, "the tail", func() bool { return out.String() == "before-2\n" })

			// Many lines, rotating many times (4 lines a file), some while
			// the reader is between files.
			var want strings.Builder
			want.WriteString("before-2\n")
			for i := 0; i < 60; i++ {
				l := fmt.Sprintf("line-%02d", i)
				lf.Write(Entry{t0, Stdout, Full, []byte(l)})
				want.WriteString(l + "\n")
				if i%7 == 0 {
					time.Sleep(2 * time.Millisecond)
				}
			}
			waitFor(t, "every line", func() bool { return out.String() == want.String() })
			lf.Write(Entry{t0, Stderr, Partial, []byte("cut ")})
			lf.Write(Entry{t0, Stderr, Partial, []byte("short")})
			stopped.Store(true)
			select {
			case err := <-done:
				if err != nil {
					t.Fatal(err)
				}
			case <-time.After(10 * time.Second):
				t.Fatal("follow did not end after the container stopped")
			}
			want.WriteString("cut short\n")
			if out.String() != want.String() {
				t.Errorf("followed:\n%s\nwant:\n%s", out.String(), want.String())
			}
		})
	}
}

func TestFollowWaitsForTheFile(t *testing.T) {
	path := filepath.Join(t.TempDir(), "0.log")
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	var out syncbuf.Buffer
	done := make(chan error, 1)
	go func() { done <- Read(ctx, path, api.LogOptions{Follow: true}, &out) }()
	time.Sleep(20 * time.Millisecond)
	writeLog(t, path, 0, "stdout F hello")
	waitFor(t, "the line", func() bool { return out.String() == "hello\n" })
	cancel()
	if err := <-done; err != nil {
		t.Fatalf("follow ended with %v, want nil on cancel", err)
	}
}
