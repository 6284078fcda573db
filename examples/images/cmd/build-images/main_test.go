package main

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"berth.dev/berth/internal/testenv"
)

func TestPushesAndWritesArchives(t *testing.T) {
	testenv.EchoImage(t, "1") // the prerequisites, and the build shared with the run below
	reg := testenv.Registry(t)
	dir := t.TempDir()
	var stdout, stderr bytes.Buffer
	if code := run(context.Background(), []string{"--registry", reg.Host(), "--archive", dir}, &stdout, &stderr); code != 0 {
		t.Fatalf("exit %d: %s", code, stderr.String())
	}
	out := stdout.String()
	for _, want := range []string{reg.Host() + "/berth/echo:1@sha256:", reg.Host() + "/berth/echo:2@sha256:", "berth/echo:2@sha256:"} {
		if !strings.Contains(out, want) {
			t.Errorf("output lacks %q:\n%s", want, out)
		}
	}
	for _, f := range []string{"echo-1.tar", "echo-2.tar"} {
		if _, err := os.Stat(filepath.Join(dir, f)); err != nil {
			t.Error(err)
		}
	}
}

func TestUsage(t *testing.T) {
	var stdout, stderr bytes.Buffer
	if code := run(context.Background(), nil, &stdout, &stderr); code != 2 || !strings.Contains(stderr.String(), "usage") {
		t.Errorf("no arguments: exit %d, %q", code, stderr.String())
	}
}
