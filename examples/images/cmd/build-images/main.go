// Command build-images builds berth's test workload images (berth/echo:1
// and berth/echo:2) and pushes them to a registry, writes them as OCI
// archives for `ctr image import` or containerd's Import, or both:
//
//	go run ./examples/images/cmd/build-images --registry 127.0.0.1:5000 [--archive DIR]
//
// It runs inside the berth source tree, which it compiles.
package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"path/filepath"
	"strings"
	"syscall"

	"berth.dev/berth/examples/images"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	code := run(ctx, os.Args[1:], os.Stdout, os.Stderr)
	stop()
	os.Exit(code)
}

func run(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("build-images", flag.ContinueOnError)
	fs.SetOutput(stderr)
	registry := fs.String("registry", "", "push to this registry host, e.g. 127.0.0.1:5000")
	plainHTTP := fs.Bool("plain-http", true, "reach the registry over plain HTTP")
	archive := fs.String("archive", "", "also write echo-<version>.tar OCI archives into this directory")
	versions := fs.String("versions", "1,2", "comma-separated versions to build")
	if err := fs.Parse(args); err != nil {
		return 2
	}
	if fs.NArg() > 0 || (*registry == "" && *archive == "") {
		fmt.Fprintln(stderr, "usage: build-images --registry HOST:PORT [--archive DIR] (at least one of them)")
		return 2
	}
	for _, v := range strings.Split(*versions, ",") {
		img, err := images.BuildEcho(ctx, v)
		if err != nil {
			fmt.Fprintln(stderr, "build-images:", err)
			return 1
		}
		digest, err := img.Digest()
		if err != nil {
			fmt.Fprintln(stderr, "build-images:", err)
			return 1
		}
		if *registry != "" {
			ref := images.EchoRef(*registry, v)
			if err := images.Push(ctx, img, ref, *plainHTTP); err != nil {
				fmt.Fprintln(stderr, "build-images:", err)
				return 1
			}
			fmt.Fprintf(stdout, "%s@%s\n", ref, digest)
		}
		if *archive != "" {
			if err := os.MkdirAll(*archive, 0o755); err != nil {
				fmt.Fprintln(stderr, "build-images:", err)
				return 1
			}
			path := filepath.Join(*archive, "echo-"+v+".tar")
			if err := images.WriteOCIArchive(img, images.EchoRef("", v), path); err != nil {
				fmt.Fprintln(stderr, "build-images:", err)
				return 1
			}
			fmt.Fprintf(stdout, "%s %s@%s\n", path, images.EchoRef("", v), digest)
		}
	}
	return 0
}
