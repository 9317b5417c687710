package main

import (
	"strings"
	"testing"

	"github.com/bargeml/barge/edgepuller/agent"
)

func TestParseDesired(t *testing.T) {
	tests := []struct {
		name string
		yaml string
		want []agent.Desired
		err  string // "" for success
	}{
		{
			name: "block style",
			yaml: "artifacts:\n  - name: resnet\n    reference: reg:5000/models/resnet:1.0\n    insecure: true\n  - name: vision/yolo\n    reference: reg:5000/models/yolo@sha256:" + strings.Repeat("a", 64) + "\n",
			want: []agent.Desired{
				{Name: "resnet", Reference: "reg:5000/models/resnet:1.0", Insecure: true},
				{Name: "vision/yolo", Reference: "reg:5000/models/yolo@sha256:" + strings.Repeat("a", 64)},
			},
		},
		{
			name: "flow style",
			yaml: "artifacts: [{name: resnet, reference: reg:5000/models/resnet:1.0, insecure: true}]",
			want: []agent.Desired{{Name: "resnet", Reference: "reg:5000/models/resnet:1.0", Insecure: true}},
		},
		{name: "empty list removes everything", yaml: "artifacts: []\n", want: []agent.Desired{}},
		{name: "empty file", yaml: "", err: "no artifacts: list"},
		{name: "other key only", yaml: "# nothing yet\nfoo: 1\n", err: `unknown field "foo"`},
		{
			name: "syntax",
			yaml: "artifacts:\n  - name: resnet\n   reference: reg/x:1\n",
			err:  ", line 3: ",
		},
		{
			name: "parser error",
			yaml: "artifacts:\n  - name: a\n    reference: b\n  name: c\n",
			err:  ", line 4: did not find expected '-' indicator",
		},
		{
			name: "scanner error",
			yaml: "artifacts:\n  - name: a\n    reference: b: c\n",
			err:  ", line 3: mapping values are not allowed",
		},
		{
			name: "duplicate key",
			yaml: "artifacts:\n  - name: a\n    reference: b\n    name: c\n",
			err:  `, line 4: key "name" already set`,
		},
		{
			name: "unknown field with its line",
			yaml: "artifacts:\n  - name: resnet\n    refrence: reg/x:1\n",
			err:  `, line 3: unknown field "refrence"`,
		},
		{
			name: "wrong type with its line",
			yaml: "artifacts:\n  - name: resnet\n    reference: reg/x:1\n    insecure: maybe\n",
			err:  ", line 4: ",
		},
		{
			name: "invalid entry with its line",
			yaml: "artifacts:\n  - name: resnet\n    reference: reg/x:1\n\n  # the next one has no tag\n  - name: yolo\n    reference: reg/yolo\n",
			err:  ", line 6: artifact #2 (yolo): ",
		},
		{
			name: "duplicate",
			yaml: "artifacts:\n- name: a\n  reference: reg/x:1\n- name: a\n  reference: reg/x:2\n",
			err:  ", line 4: artifact #2 (a): its directory overlaps",
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := parseDesired([]byte(tt.yaml))
			if tt.err != "" {
				if err == nil || !strings.Contains(err.Error(), tt.err) {
					t.Fatalf("error = %v, want one containing %q", err, tt.err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if len(got) != len(tt.want) {
				t.Fatalf("got %v, want %v", got, tt.want)
			}
			for i := range got {
				if got[i] != tt.want[i] {
					t.Errorf("entry %d = %+v, want %+v", i, got[i], tt.want[i])
				}
			}
		})
	}
}

// FuzzParseDesired: whatever is in the file, parsing returns a list that
// validates, or an error; it never panics.
func FuzzParseDesired(f *testing.F) {
	f.Add([]byte("artifacts:\n  - name: resnet\n    reference: reg:5000/models/resnet:1.0\n    insecure: true\n"))
	f.Add([]byte("artifacts: [{name: a, reference: r/x:1}]"))
	f.Add([]byte("artifacts:\n- name: a\n  reference: r/x\n"))
	f.Add([]byte("a: &a [*a, *a]"))
	f.Fuzz(func(t *testing.T, b []byte) {
		list, err := parseDesired(b)
		if err == nil {
			if verr := agent.Validate(list); verr != nil {
				t.Fatalf("accepted a list that does not validate: %v", verr)
			}
		}
	})
}
