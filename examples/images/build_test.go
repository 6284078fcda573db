package images_test

import (
	"archive/tar"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"berth.dev/berth/examples/images"
	"berth.dev/berth/internal/testenv"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/types"
)

func TestEchoVersionsDifferOnlyInBinary(t *testing.T) {
	img1, img2 := testenv.EchoImage(t, "1"), testenv.EchoImage(t, "2")
	l1, err := img1.Layers()
	if err != nil {
		t.Fatal(err)
	}
	l2, err := img2.Layers()
	if err != nil {
		t.Fatal(err)
	}
	if len(l1) != 2 || len(l2) != 2 {
		t.Fatalf("layers: %d and %d, want 2 each", len(l1), len(l2))
	}
	if digest(t, l1[0]) != digest(t, l2[0]) {
		t.Errorf("busybox layers differ: %s, %s", digest(t, l1[0]), digest(t, l2[0]))
	}
	if digest(t, l1[1]) == digest(t, l2[1]) {
		t.Error("echo layers of versions 1 and 2 are the same")
	}

	c1, err := img1.ConfigFile()
	if err != nil {
		t.Fatal(err)
	}
	c2, err := img2.ConfigFile()
	if err != nil {
		t.Fatal(err)
	}
	// Apart from the layer list, the configs are equal.
	c1.RootFS, c2.RootFS = v1.RootFS{}, v1.RootFS{}
	j1, _ := json.Marshal(c1)
	j2, _ := json.Marshal(c2)
	if string(j1) != string(j2) {
		t.Errorf("configs differ beyond their layers:\n%s\n%s", j1, j2)
	}
	cfg := c1.Config
	if strings.Join(cfg.Entrypoint, " ") != "/echo" || cfg.User != "" || len(cfg.Cmd) != 0 {
		t.Errorf("entrypoint %q cmd %q user %q", cfg.Entrypoint, cfg.Cmd, cfg.User)
	}
	if _, ok := cfg.ExposedPorts["8080/tcp"]; !ok || len(cfg.ExposedPorts) != 1 {
		t.Errorf("exposed ports %v", cfg.ExposedPorts)
	}
	if len(cfg.Env) != 1 || cfg.Env[0] != "PATH="+images.Path {
		t.Errorf("env %q", cfg.Env)
	}
	if !c1.Created.Time.Equal(images.Epoch) || c1.OS != "linux" {
		t.Errorf("created %v os %s", c1.Created, c1.OS)
	}
	if mt, _ := img1.MediaType(); mt != types.OCIManifestSchema1 {
		t.Errorf("manifest media type %s", mt)
	}
	if mt, _ := l1[0].MediaType(); mt != types.OCILayer {
		t.Errorf("layer media type %s", mt)
	}
}

func digest(t *testing.T, l v1.Layer) v1.Hash {
	t.Helper()
	d, err := l.Digest()
	if err != nil {
		t.Fatal(err)
	}
	return d
}

func TestEchoImageFiles(t *testing.T) {
	rc := mutate.Extract(testenv.EchoImage(t, "1"))
	defer rc.Close()
	tr := tar.NewReader(rc)
	got := map[string]*tar.Header{}
	contents := map[string]string{}
	for {
		h, err := tr.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		got[h.Name] = h
		if h.Name == "etc/passwd" || h.Name == "etc/group" {
			b, _ := io.ReadAll(tr)
			contents[h.Name] = string(b)
		}
	}
	for name, want := range map[string]struct {
		typ  byte
		mode int64
		link string
	}{
		"echo":        {tar.TypeReg, 0o755, ""},
		"bin/busybox": {tar.TypeReg, 0o755, ""},
		"bin/sh":      {tar.TypeSymlink, 0o777, "busybox"},
		"bin/id":      {tar.TypeSymlink, 0o777, "busybox"},
		"bin/wget":    {tar.TypeSymlink, 0o777, "busybox"},
		"tmp":         {tar.TypeDir, 0o1777, ""},
		"etc/passwd":  {tar.TypeReg, 0o644, ""},
	} {
		h := got[name]
		if h == nil {
			t.Errorf("%s missing", name)
			continue
		}
		if h.Typeflag != want.typ || h.Mode != want.mode || h.Linkname != want.link || !h.ModTime.Equal(images.Epoch) {
			t.Errorf("%s: type %c mode %o link %q mtime %v", name, h.Typeflag, h.Mode, h.Linkname, h.ModTime)
		}
	}
	for _, a := range images.BusyboxApplets {
		if got["bin/"+a] == nil {
			t.Errorf("applet %s missing", a)
		}
	}
	if !strings.Contains(contents["etc/passwd"], "nonroot:x:65532:65532:") || !strings.Contains(contents["etc/group"], "nonroot:x:65532:") {
		t.Errorf("passwd %q group %q", contents["etc/passwd"], contents["etc/group"])
	}
	if h := got["home/nonroot"]; h == nil || h.Uid != images.NonRootUID {
		t.Errorf("home/nonroot: %+v", h)
	}
}

// TestRebuildGivesSameDigests builds the images in this process and in a
// fresh one (this test binary again): the digests must match.
func TestRebuildGivesSameDigests(t *testing.T) {
	if os.Getenv("BERTH_PRINT_ECHO_DIGESTS") == "1" {
		for _, v := range testenv.EchoVersions {
			d, err := testenv.EchoImage(t, v).Digest()
			if err != nil {
				t.Fatal(err)
			}
			fmt.Printf("digest %s %s\n", v, d)
		}
		return
	}
	var want strings.Builder
	for _, v := range testenv.EchoVersions {
		d, err := testenv.EchoImage(t, v).Digest()
		if err != nil {
			t.Fatal(err)
		}
		fmt.Fprintf(&want, "digest %s %s\n", v, d)
	}
	cmd := exec.Command(os.Args[0], "-test.run=^TestRebuildGivesSameDigests$", "-test.count=1")
	cmd.Env = append(os.Environ(), "BERTH_PRINT_ECHO_DIGESTS=1")
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("rebuild in a new process: %v\n%s", err, out)
	}
	if !strings.Contains(string(out), want.String()) {
		t.Errorf("a new process built\n%s\nthis one\n%s", out, want.String())
	}
}

func TestWriteOCIArchive(t *testing.T) {
	img := testenv.EchoImage(t, "2")
	path := filepath.Join(t.TempDir(), "echo.tar")
	if err := images.WriteOCIArchive(img, "berth/echo:2", path); err != nil {
		t.Fatal(err)
	}
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	files := map[string][]byte{}
	tr := tar.NewReader(f)
	for {
		h, err := tr.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(tr)
		files[h.Name] = b
	}
	var index v1.IndexManifest
	if err := json.Unmarshal(files["index.json"], &index); err != nil {
		t.Fatalf("index.json: %v", err)
	}
	if _, ok := files["oci-layout"]; !ok {
		t.Error("oci-layout missing")
	}
	d, _ := img.Digest()
	if len(index.Manifests) != 1 || index.Manifests[0].Digest != d {
		t.Fatalf("index %+v, want one manifest %s", index, d)
	}
	ann := index.Manifests[0].Annotations
	if ann["io.containerd.image.name"] != "docker.io/berth/echo:2" || ann["org.opencontainers.image.ref.name"] != "2" {
		t.Errorf("annotations %v", ann)
	}
	m, _ := img.Manifest()
	for _, desc := range append([]v1.Descriptor{m.Config}, m.Layers...) {
		if _, ok := files["blobs/sha256/"+desc.Digest.Hex]; !ok {
			t.Errorf("blob %s missing", desc.Digest)
		}
	}

	if err := images.WriteOCIArchive(img, "Not A Ref", path); err == nil {
		t.Error("bad reference accepted")
	}
}

func TestBuildEchoRejectsBadVersion(t *testing.T) {
	if _, err := images.BuildEcho(context.Background(), "1 -X main.x=y"); err == nil {
		t.Error("version with a space accepted")
	}
}
