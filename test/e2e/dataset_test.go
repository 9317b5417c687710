package e2e

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/bargeml/barge/registry"
)

// vocTree is a small Pascal VOC dataset with many files.
func vocTree(n int) map[string]string {
	files := map[string]string{}
	var train, val []string
	for i := range n {
		id := fmt.Sprintf("%06d", i)
		name := []string{"cat", "dog", "person"}[i%3]
		files["Annotations/"+id+".xml"] = `<annotation><filename>` + id + `.jpg</filename><object><name>` + name + `</name><difficult>0</difficult></object></annotation>`
		files["JPEGImages/"+id+".jpg"] = strings.Repeat(name[:1], 2000+i)
		if i%5 == 0 {
			val = append(val, id)
		} else {
			train = append(train, id)
		}
	}
	files["ImageSets/Main/train.txt"] = strings.Join(train, "\n") + "\n"
	files["ImageSets/Main/val.txt"] = strings.Join(val, "\n") + "\n"
	return files
}

func TestDatasetPushPullInspect(t *testing.T) {
	reg := registry.StartForTest(t)
	src := t.TempDir()
	files := vocTree(600)
	writeTree(t, src, files)
	ref := reg.Host() + "/datasets/voc:1"
	push := must(t, barge(t, "push", "--kind", "dataset", "--shard-size", "256K", src, ref))
	if !strings.Contains(push.stderr, "Dataset: voc, 600 samples, 3 classes") {
		t.Errorf("push did not report the statistics:\n%s", push.stderr)
	}

	var in struct {
		Kind    string `json:"kind"`
		Files   []struct{ Path, MediaType string }
		Dataset struct {
			Format          string           `json:"format"`
			NumberOfSamples int64            `json:"numberOfSamples"`
			Classes         map[string]int64 `json:"classes"`
			Splits          map[string]struct {
				NumberOfSamples int64 `json:"numberOfSamples"`
			} `json:"splits"`
		} `json:"dataset"`
	}
	if err := json.Unmarshal([]byte(must(t, barge(t, "inspect", "-o", "json", ref)).stdout), &in); err != nil {
		t.Fatal(err)
	}
	if in.Kind != "dataset" || in.Dataset.Format != "voc" || in.Dataset.NumberOfSamples != 600 ||
		in.Dataset.Classes["cat"] != 200 || in.Dataset.Splits["val"].NumberOfSamples != 120 {
		t.Errorf("inspect: %+v", in.Dataset)
	}
	// 1,202 files must not become 1,202 layers.
	if len(in.Files) > 40 {
		t.Errorf("%d layers for %d files", len(in.Files), len(files))
	}

	out := filepath.Join(t.TempDir(), "voc")
	must(t, barge(t, "pull", ref, out))
	sameTree(t, tree(t, out, ".barge-pull"), files)

	// A new version with one changed annotation transfers one shard.
	files["Annotations/000007.xml"] = strings.Replace(files["Annotations/000007.xml"], "dog", "cat", 1)
	writeTree(t, src, files)
	ref2 := reg.Host() + "/datasets/voc:2"
	must(t, barge(t, "push", "--kind", "dataset", "--shard-size", "256K", src, ref2))
	r := must(t, barge(t, "pull", "-o", "json", ref2, filepath.Join(t.TempDir(), "voc2")))
	var res struct {
		Fetched int64 `json:"fetchedBytes"`
		Reused  int64 `json:"reusedBytes"`
	}
	json.Unmarshal([]byte(r.stdout), &res)
	if res.Fetched > 300<<10 || res.Reused == 0 {
		t.Errorf("the second version fetched %d bytes and reused %d; want one shard fetched", res.Fetched, res.Reused)
	}
}

func TestDatasetStatsCLI(t *testing.T) {
	dir := t.TempDir()
	writeTree(t, dir, map[string]string{
		"train.csv": "x,label\r\n1,a\r\n\"2,5\",b\r\n3\r\n",
	})
	r := barge(t, "dataset", "stats", "-o", "json", dir)
	must(t, r)
	var st struct {
		NumberOfSamples int64 `json:"numberOfSamples"`
		Problems        []struct {
			Path string `json:"path"`
			Line int    `json:"line"`
		} `json:"problems"`
	}
	json.Unmarshal([]byte(r.stdout), &st)
	if st.NumberOfSamples != 2 || len(st.Problems) != 1 || st.Problems[0].Path != "train.csv" || st.Problems[0].Line != 4 {
		t.Errorf("stats %+v", st)
	}
	if r := barge(t, "push", "--kind", "dataset", "--strict", dir, "127.0.0.1:1/d:1"); r.err == nil || !strings.Contains(r.stderr, "--strict") {
		t.Errorf("strict push of a dataset with problems: %s", r)
	}
	if r := barge(t, "dataset", "stats", t.TempDir()); r.err == nil {
		t.Errorf("stats of an empty directory: %s", r)
	}
}

// A dataset pushed with --store on the node that collected it is in that
// node's blob store already: pulling it there moves no layer bytes, which
// is what lets the node seed its site without the dataset coming back down
// the uplink.
func TestPushKeepsACopyInTheNodeStore(t *testing.T) {
	reg := registry.StartForTest(t)
	src := t.TempDir()
	files := vocTree(200)
	writeTree(t, src, files)
	nodeStore := filepath.Join(t.TempDir(), "store")
	ref := reg.Host() + "/datasets/collected:1"
	must(t, barge(t, "push", "--kind", "dataset", "--shard-size", "128K", "--store", nodeStore, src, ref))

	out := filepath.Join(t.TempDir(), "voc")
	r := must(t, barge(t, "pull", "-o", "json", "--cache", nodeStore, ref, out))
	var res struct {
		Fetched int64 `json:"fetchedBytes"`
		Reused  int64 `json:"reusedBytes"`
	}
	if err := json.Unmarshal([]byte(r.stdout), &res); err != nil {
		t.Fatalf("pull -o json: %v\n%s", err, r.stdout)
	}
	sameTree(t, tree(t, out, ".barge-pull"), files)
	if res.Fetched != 0 || res.Reused == 0 {
		t.Errorf("pulling on the node that pushed fetched %d bytes and reused %d: want everything from its store", res.Fetched, res.Reused)
	}

	// The registry got the same artifact: a pull elsewhere gets the files.
	elsewhere := filepath.Join(t.TempDir(), "voc")
	must(t, barge(t, "pull", "--cache", filepath.Join(t.TempDir(), "other"), ref, elsewhere))
	sameTree(t, tree(t, elsewhere, ".barge-pull"), files)

	// A store that cannot be opened is named, and nothing is pushed.
	bad := filepath.Join(t.TempDir(), "file")
	os.WriteFile(bad, nil, 0o644)
	r = barge(t, "push", "--kind", "dataset", "--store", bad, src, reg.Host()+"/datasets/collected:2")
	if r.err == nil || !strings.Contains(r.stderr, "--store") {
		t.Errorf("push with a file as --store: %s", r)
	}
	if r := barge(t, "inspect", reg.Host()+"/datasets/collected:2"); r.err == nil {
		t.Errorf("a failed push with a bad --store still tagged collected:2")
	}
}
