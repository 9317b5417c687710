// Command modelserver is the model server of the tests that run edge
// serving pods as processes (testenv.StartProcessKubelet): it reads what
// the serving contract gives it at start, as a real server loads its model,
// and answers GET / with it as JSON. It exits with status 1 at start when
// the model directory holds a file named CRASH: a bad version.
//
//	modelserver [-model FILE] [-cloud-url-file FILE] [-load-time DURATION]
//
// It listens on 127.0.0.1:$PORT (8080 without PORT), -load-time after it
// started: the time a real server takes to load its model, during which a
// restarted node does not serve.
package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"io/fs"
	"net"
	"net/http"
	"os"
	"os/signal"
	"path/filepath"
	"strings"
	"syscall"
	"time"
)

// Answer is what GET / returns.
type Answer struct {
	Name   string `json:"name"`
	Digest string `json:"digest"`
	// Model is the content of the model file.
	Model string `json:"model"`
	// Preprocess is every file under $BARGE_PREPROCESS_DIR, by path.
	Preprocess map[string]string `json:"preprocess,omitempty"`
	// Labels are the lines of $BARGE_LABELS_FILE.
	Labels       []string `json:"labels,omitempty"`
	CloudURL     string   `json:"cloudURL,omitempty"`
	CloudURLFile string   `json:"cloudURLFile,omitempty"`
	PID          int      `json:"pid"`
}

func main() {
	if err := run(); err != nil {
		fmt.Fprintln(os.Stderr, "modelserver:", err)
		os.Exit(1)
	}
}

func run() error {
	model := flag.String("model", "", "the model file (default: $BARGE_MODEL_DIR/model.bin)")
	cloudFile := flag.String("cloud-url-file", "", "a file holding the cloud part's address")
	loadTime := flag.Duration("load-time", 0, "how long loading the model takes before the server listens")
	flag.Parse()
	dir := os.Getenv("BARGE_MODEL_DIR")
	if dir == "" {
		return fmt.Errorf("BARGE_MODEL_DIR is not set")
	}
	if _, err := os.Stat(filepath.Join(dir, "CRASH")); err == nil {
		return fmt.Errorf("%s holds CRASH: this version cannot serve", dir)
	}
	a, err := load(dir, *model, *cloudFile)
	if err != nil {
		return err
	}
	body, err := json.Marshal(a)
	if err != nil {
		return err
	}
	time.Sleep(*loadTime)
	port := os.Getenv("PORT")
	if port == "" {
		port = "8080"
	}
	l, err := net.Listen("tcp", net.JoinHostPort("127.0.0.1", port))
	if err != nil {
		return err
	}
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		w.Write(body)
	})}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, os.Interrupt)
	defer stop()
	go func() {
		<-ctx.Done()
		srv.Shutdown(context.Background())
	}()
	fmt.Printf("serving %s (%s) on %s\n", a.Name, a.Digest, l.Addr())
	if err := srv.Serve(l); err != http.ErrServerClosed {
		return err
	}
	return nil
}

// load reads what the answer holds.
func load(dir, model, cloudFile string) (*Answer, error) {
	if model == "" {
		model = filepath.Join(dir, "model.bin")
	}
	b, err := os.ReadFile(model)
	if err != nil {
		return nil, err
	}
	a := &Answer{Name: os.Getenv("BARGE_MODEL_NAME"), Digest: os.Getenv("BARGE_MODEL_DIGEST"), Model: string(b),
		CloudURL: os.Getenv("BARGE_CLOUD_URL"), PID: os.Getpid()}
	if pre := os.Getenv("BARGE_PREPROCESS_DIR"); pre != "" {
		a.Preprocess = map[string]string{}
		err := filepath.WalkDir(pre, func(p string, d fs.DirEntry, err error) error {
			if err != nil || d.IsDir() {
				return err
			}
			b, err := os.ReadFile(p)
			rel, _ := filepath.Rel(pre, p)
			a.Preprocess[filepath.ToSlash(rel)] = string(b)
			return err
		})
		if err != nil {
			return nil, err
		}
	}
	if f := os.Getenv("BARGE_LABELS_FILE"); f != "" {
		b, err := os.ReadFile(f)
		if err != nil {
			return nil, err
		}
		a.Labels = strings.Split(strings.TrimRight(string(b), "\n"), "\n")
	}
	if cloudFile != "" {
		b, err := os.ReadFile(cloudFile)
		if err != nil {
			return nil, err
		}
		a.CloudURLFile = string(b)
	}
	return a, nil
}
