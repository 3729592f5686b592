-- `item_reference` input items name a stored item by its ID alone: find it by ID among
-- conversation items, response input items, and response outputs (their items' IDs).
CREATE INDEX conversation_items_id ON conversation_items (id);
CREATE INDEX response_input_items_id ON response_input_items (id);
CREATE INDEX responses_output_item_ids ON responses
    USING gin (jsonb_path_query_array(output, '$[*].id'));
