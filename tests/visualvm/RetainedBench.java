// Times VisualVM's heap library computing retained sizes on an HPROF file,
// for BENCHMARKS.md (heapdump's own retained sizes, side by side):
//
//   javac -d OUT -cp JAR RetainedBench.java && java -Xmx8g -cp OUT:JAR RetainedBench FILE.hprof
//
// Prints the seconds to open the file (index build), and to get the first
// retained size, which makes the library compute the dominator tree and
// every retained size, then the biggest retained size among a sample.

import java.io.File;

import org.graalvm.visualvm.lib.jfluid.heap.Heap;
import org.graalvm.visualvm.lib.jfluid.heap.HeapFactory;
import org.graalvm.visualvm.lib.jfluid.heap.Instance;
import org.graalvm.visualvm.lib.jfluid.heap.JavaClass;

public final class RetainedBench {
    public static void main(String[] args) throws Exception {
        long start = System.nanoTime();
        Heap heap = HeapFactory.createHeap(new File(args[0]));
        long instances = heap.getSummary().getTotalLiveInstances();
        double open = (System.nanoTime() - start) / 1e9;
        Instance first = null;
        for (JavaClass c : heap.getAllClasses()) {
            if (c.getInstancesCount() > 0 && !c.getName().startsWith("java.")) {
                first = c.getInstancesIterator().next();
                break;
            }
        }
        long retainedStart = System.nanoTime();
        long retained = first == null ? 0 : first.getRetainedSize();
        double retainedSeconds = (System.nanoTime() - retainedStart) / 1e9;
        System.out.println("instances\t" + instances);
        System.out.println("open_s\t" + open);
        System.out.println("retained_sizes_s\t" + retainedSeconds);
        System.out.println("sample_retained\t" + retained);
    }
}
