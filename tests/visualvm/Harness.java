// Loads an HPROF file with VisualVM's heap library (the jar
// org-graalvm-visualvm-lib-jfluid-heap.jar of the Debian package `visualvm`)
// and prints what VisualVM would show, one fact a line, tab-separated:
//
//   summary  <live instances>  <live bytes>
//   total    <instances>       <bytes>          (summed over classes)
//   class    <name>  <instances>  <bytes>  <instance size>
//   root     <kind>  <count>
//   object   <id hex>  <class>  <size>  <retained size>  <nearest GC root pointer id hex or "root" or "none">
//   field    <id hex>  <field name>  <target id hex>
//
// `object` and `field` lines are printed for each id given after the file
// (hex, with or without 0x). Retained sizes are computed for those objects,
// which needs java.lang.Class and java.lang.ref.Reference in the file.
//
//   javac -d OUT -cp JAR Harness.java && java -cp OUT:JAR Harness FILE.hprof [ID...]

import java.io.File;
import java.util.List;
import java.util.Map;
import java.util.TreeMap;

import org.graalvm.visualvm.lib.jfluid.heap.FieldValue;
import org.graalvm.visualvm.lib.jfluid.heap.GCRoot;
import org.graalvm.visualvm.lib.jfluid.heap.Heap;
import org.graalvm.visualvm.lib.jfluid.heap.HeapFactory;
import org.graalvm.visualvm.lib.jfluid.heap.HeapSummary;
import org.graalvm.visualvm.lib.jfluid.heap.Instance;
import org.graalvm.visualvm.lib.jfluid.heap.JavaClass;
import org.graalvm.visualvm.lib.jfluid.heap.ObjectFieldValue;

public final class Harness {
    public static void main(String[] args) throws Exception {
        if (args.length < 1) {
            System.err.println("usage: Harness FILE.hprof [OBJECT_ID_HEX...]");
            System.exit(2);
        }
        Heap heap = HeapFactory.createHeap(new File(args[0]));
        HeapSummary summary = heap.getSummary();
        System.out.println("summary\t" + summary.getTotalLiveInstances() + "\t" + summary.getTotalLiveBytes());
        long instances = 0;
        long bytes = 0;
        for (JavaClass c : heap.getAllClasses()) {
            instances += c.getInstancesCount();
            bytes += c.getAllInstancesSize();
            System.out.println("class\t" + c.getName() + "\t" + c.getInstancesCount() + "\t"
                    + c.getAllInstancesSize() + "\t" + c.getInstanceSize());
        }
        System.out.println("total\t" + instances + "\t" + bytes);
        Map<String, Integer> roots = new TreeMap<>();
        for (GCRoot root : heap.getGCRoots()) {
            roots.merge(root.getKind(), 1, Integer::sum);
        }
        for (Map.Entry<String, Integer> e : roots.entrySet()) {
            System.out.println("root\t" + e.getKey() + "\t" + e.getValue());
        }
        for (int i = 1; i < args.length; i++) {
            String hex = args[i].startsWith("0x") ? args[i].substring(2) : args[i];
            long id = Long.parseUnsignedLong(hex, 16);
            Instance instance = heap.getInstanceByID(id);
            if (instance == null) {
                System.out.println("object\t" + Long.toHexString(id) + "\tmissing");
                continue;
            }
            Instance nearest = instance.getNearestGCRootPointer();
            String path;
            if (instance.isGCRoot()) {
                path = "root";
            } else if (nearest == null) {
                path = "none";
            } else {
                path = Long.toHexString(nearest.getInstanceId());
            }
            System.out.println("object\t" + Long.toHexString(id) + "\t" + instance.getJavaClass().getName() + "\t"
                    + instance.getSize() + "\t" + instance.getRetainedSize() + "\t" + path);
            List<FieldValue> values = instance.getFieldValues();
            for (FieldValue value : values) {
                if (value instanceof ObjectFieldValue) {
                    Instance target = ((ObjectFieldValue) value).getInstance();
                    String to = target == null ? "0" : Long.toHexString(target.getInstanceId());
                    System.out.println("field\t" + Long.toHexString(id) + "\t" + value.getField().getName() + "\t" + to);
                }
            }
        }
    }
}
