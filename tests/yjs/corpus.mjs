// Writes updates made by the real Yjs, one per line as `hex state-vector-json`, for the
// scanner's differential test (core/tests/ydoc_corpus.rs): every content type Yjs
// encodes, deletions, formatting, embeds, XML, subdocuments, several clients, merges.
import * as Y from 'yjs';

let seed = Number(process.argv[2] ?? 1);
const random = () => {
  seed = (seed * 1103515245 + 12345) % 2147483648;
  return seed / 2147483648;
};
const pick = (items) => items[Math.floor(random() * items.length)];
const count = Number(process.argv[3] ?? 200);

const out = [];
const emit = (update) => {
  const sv = Y.decodeStateVector(Y.encodeStateVectorFromUpdate(update));
  out.push(`${Buffer.from(update).toString('hex')} ${JSON.stringify(Object.fromEntries([...sv].map(([c, k]) => [String(c), k])))}`);
};

for (let i = 0; i < count; i++) {
  const docs = [new Y.Doc(), new Y.Doc()];
  for (const doc of docs) doc.on('update', emit);
  for (let step = 0; step < 8; step++) {
    const doc = pick(docs);
    const text = doc.getText('t');
    const map = doc.getMap('m');
    const array = doc.getArray('a');
    const xml = doc.getXmlFragment('x');
    switch (Math.floor(random() * 9)) {
      case 0: text.insert(Math.floor(random() * (text.length + 1)), pick(['a', 'hé', '😀x', 'long text '.repeat(3)])); break;
      case 1: if (text.length > 0) text.delete(0, Math.ceil(random() * text.length)); break;
      case 2: text.insert(0, 'bold', { bold: true }); text.format(0, 2, { italic: { deep: [1, null] } }); break;
      case 3: text.insertEmbed(0, { image: 'x.png', size: [1, 2] }); break;
      case 4: map.set(pick(['k', 'é', '']), pick([1, -7, 2.5, 2 ** 40, null, true, 'v', [1, [2, { z: false }]], { a: { b: [] } }, new Uint8Array([1, 2])])); break;
      case 5: array.push([pick([1, 'x', { o: 1 }]), new Y.Map()]); break;
      case 6: { const p = new Y.XmlElement('p'); p.insert(0, [new Y.XmlText('para')]); p.setAttribute('class', 'c'); xml.insert(0, [p]); break; }
      case 7: map.set('sub', new Y.Doc({ guid: `g${i}` })); break;
      default: map.delete('k'); if (array.length) array.delete(0, 1); break;
    }
  }
  Y.applyUpdate(docs[0], Y.encodeStateAsUpdate(docs[1]));
  emit(Y.encodeStateAsUpdate(docs[0]));
  emit(Y.mergeUpdates(out.slice(-3).map((line) => Buffer.from(line.split(' ')[0], 'hex'))));
}
process.stdout.write(out.join('\n') + '\n');
