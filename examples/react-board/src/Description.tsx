// A task's description: a Yjs document edited in CodeMirror by everyone on the board at
// once, with each other's cursors and names. It is the `description` column of the task's
// row (rowsync.enable_doc in sql/demo.sql), served by the bridge at /v1/yjs to the stock
// y-websocket client, and kept in IndexedDB (y-indexeddb) so that it opens and takes edits
// offline. A viewer's edits are refused by the bridge; the editor says so.
import { useEffect, useRef, useState } from 'react';
import * as Y from 'yjs';
import { WebsocketProvider } from 'y-websocket';
import { IndexeddbPersistence } from 'y-indexeddb';
import { EditorView, basicSetup } from 'codemirror';
import { EditorState } from '@codemirror/state';
import { yCollab } from 'y-codemirror.next';
import { COLORS } from './model.ts';

declare global {
  interface Window {
    /** The open descriptions, for the browser tests. */
    descriptions: Record<string, { doc: Y.Doc; provider: WebsocketProvider; view: EditorView }>;
  }
}

type Status = 'connecting' | 'connected' | 'disconnected' | 'refused';

export function Description({ taskId, me, token, yjsUrl }: { taskId: string; me: string; token: string; yjsUrl: string }) {
  const host = useRef<HTMLDivElement>(null);
  const [status, setStatus] = useState<Status>('connecting');
  const [readOnly, setReadOnly] = useState(false);
  useEffect(() => {
    const room = `tasks/${taskId}/description`;
    const doc = new Y.Doc();
    const local = new IndexeddbPersistence(`rowsync:${me}:${room}`, doc);
    const provider = new WebsocketProvider(yjsUrl, room, doc, { params: { access_token: token } });
    const color = COLORS[me] ?? '#888888';
    provider.awareness.setLocalStateField('user', { name: me, color, colorLight: `${color}33` });
    provider.on('status', ({ status }) => setStatus(status));
    provider.on('connection-close', (event) => {
      // 44xx: refused for good (no access, or gone); the stock client stops by itself.
      if (event && event.code >= 4400 && event.code < 4500) setStatus('refused');
    });
    // A refusal `[2, 0, reason]`: the editor is read only when the reason says the edits
    // will not be stored (a viewer, or a document over its limits), not for a refused
    // cursor or a malformed message.
    const denied = provider.messageHandlers[2];
    provider.messageHandlers[2] = (encoder, decoder, p, emitSynced, type) => {
      const reason = new TextDecoder().decode(decoder.arr.subarray(decoder.pos));
      if (/^[\s\S]{2,3}?(read_only|document_too_large|update_too_large)/.test(reason)) setReadOnly(true);
      denied(encoder, decoder, p, emitSynced, type);
    };
    const text = doc.getText('description');
    const view = new EditorView({
      state: EditorState.create({
        doc: text.toString(),
        extensions: [basicSetup, EditorView.lineWrapping, yCollab(text, provider.awareness)],
      }),
      parent: host.current!,
    });
    window.descriptions = { ...window.descriptions, [taskId]: { doc, provider, view } };
    return () => {
      delete window.descriptions[taskId];
      view.destroy();
      provider.destroy();
      void local.destroy();
      doc.destroy();
    };
  }, [taskId, me, token, yjsUrl]);
  return (
    <section id="description" data-status={status}>
      <h3>
        Description <small className="doc-status">{readOnly ? 'read only' : status === 'connected' ? 'live' : status}</small>
      </h3>
      <div ref={host} className="editor" />
    </section>
  );
}
