// Reads a Chrome DevTools heap snapshot with memlab's parser (an
// implementation independent of heapdump's writer) and prints, as one JSON
// array, every node it found: id, name, type, self size, the retained size
// memlab computes from its own dominator tree, and the node's references
// (edge type, name or index, target id).
//
//   node tests/node/read_heapsnapshot.js FILE.heapsnapshot
const {getFullHeapFromFile} = require('@memlab/heap-analysis');

(async () => {
  const heap = await getFullHeapFromFile(process.argv[2]);
  const nodes = [];
  heap.nodes.forEach(node => {
    nodes.push({
      id: node.id,
      name: node.name,
      type: node.type,
      self_size: node.self_size,
      retained_size: node.retainedSize,
      references: node.references.map(edge => [edge.type, String(edge.name_or_index), edge.toNode.id]),
    });
  });
  process.stdout.write(JSON.stringify(nodes));
})().catch(error => {
  console.error(error);
  process.exit(1);
});
