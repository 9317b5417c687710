package dataset_test

import (
	"context"
	"fmt"
	"os"

	"github.com/bargeml/barge/dataset"
)

func ExampleAnalyze() {
	stats, err := dataset.Analyze(context.Background(), "testdata/voc", dataset.Options{})
	if err != nil {
		fmt.Println(err)
		return
	}
	stats.WriteTable(os.Stdout)
	// Output:
	// Format:   voc
	// Samples:  3
	// Objects:  5
	// Files:    6 (1.3 KiB)
	//
	// SPLIT  SAMPLES  OBJECTS  CLASSES
	// train  2        4        2
	// val    1        1        1
	//
	// CLASS   COUNT  TRAIN  VAL  DIFFICULT
	// dog     3      3      0    1
	// cat     1      0      1    0
	// person  1      1      0    0
	//
	// Problems: 1
	//   Annotations/000003.xml:6: malformed XML: element <object> closed by </objekt>: annotation not counted
}
