/** Where a page ends: the last row's creation time and id. */
export interface Cursor {
  createdAt: Date;
  id: string;
}

/** The MikroORM filter of the rows after `cursor`, in (createdAt, id) order. */
export const afterCursor = (cursor: Cursor | undefined) =>
  cursor ? { $or: [{ createdAt: { $gt: cursor.createdAt } }, { createdAt: cursor.createdAt, id: { $gt: cursor.id } }] } : {};
